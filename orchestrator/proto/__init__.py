"""Generated wire-protocol code (see orchestrator.proto and scripts/gen_proto.sh)."""
