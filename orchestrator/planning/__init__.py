"""Pure planning: names, labels, host resolution and rollout plans. No I/O here."""
