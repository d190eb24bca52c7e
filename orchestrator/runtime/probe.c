/*
 * orchestrator-probe: the runtime image's HEALTHCHECK, without an interpreter.
 *
 * Docker execs the HEALTHCHECK in the head's container every interval. An exec'd Python
 * probe costs ~0.15 s of CPU, and it reads the interpreter and the modules the head has
 * already read once, which moves ~8 MB of the container's page cache to the active list,
 * where `docker stats` counts it as the head's memory. This program makes the same one
 * gRPC call as probe.py (grpc.health.v1.Health/Check with an empty request, cleartext
 * HTTP/2 with prior knowledge, on 127.0.0.1) with nothing but libc.
 *
 * Exit 0 when the answer is the message `status: SERVING` (bytes 08 01); 1 for anything
 * else: NOT_SERVING, an error status, a reset, GOAWAY, no listener, a peer that is not
 * HTTP/2, or no answer within the timeout; 2 for bad arguments. TLS (--tls, --tls-cert, or
 * the ORCHESTRATOR_PROBE_TLS* variables a TLS head carries) is left to the Python probe:
 * this program execs `python -m orchestrator.runtime probe` with the same arguments.
 *
 * Built static by orchestrator/images.py (`build_probe`) into the image's build context.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#ifndef PYTHON
#define PYTHON "/opt/venv/bin/python"
#endif

enum { DATA = 0, HEADERS = 1, RST_STREAM = 3, SETTINGS = 4, PING = 6, GOAWAY = 7 };
enum { END_STREAM = 0x1, ACK = 0x1, END_HEADERS = 0x4, PADDED = 0x8 };
enum { STREAM = 1, MAX_FRAME = 16384, HEADER = 9 };

static const char PREFACE[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
static const char PATH[] = "/grpc.health.v1.Health/Check";
/* the whole answer's body: uncompressed, 2 bytes, HealthCheckResponse{status: SERVING} */
static const unsigned char SERVING[] = {0, 0, 0, 0, 2, 0x08, 0x01};

static void on_alarm(int sig) {
    (void)sig;
    _exit(1);
}

static size_t frame(unsigned char *out, int type, int flags, unsigned stream,
                    const unsigned char *payload, size_t length) {
    out[0] = (unsigned char)(length >> 16);
    out[1] = (unsigned char)(length >> 8);
    out[2] = (unsigned char)length;
    out[3] = (unsigned char)type;
    out[4] = (unsigned char)flags;
    out[5] = (unsigned char)(stream >> 24);
    out[6] = (unsigned char)(stream >> 16);
    out[7] = (unsigned char)(stream >> 8);
    out[8] = (unsigned char)stream;
    if (length)
        memcpy(out + HEADER, payload, length);
    return HEADER + length;
}

/* HPACK literal without indexing, name from the static table, raw value (RFC 7541 6.2.2) */
static size_t literal(unsigned char *out, int name_index, const char *value) {
    size_t n = strlen(value);
    out[0] = (unsigned char)name_index;
    out[1] = (unsigned char)n;
    memcpy(out + 2, value, n);
    return 2 + n;
}

static int send_all(int fd, const unsigned char *data, size_t length) {
    while (length) {
        ssize_t sent = send(fd, data, length, MSG_NOSIGNAL);
        if (sent <= 0)
            return -1;
        data += sent;
        length -= (size_t)sent;
    }
    return 0;
}

/* the same bytes as probe.request(port): preface, SETTINGS, HEADERS and DATA on stream 1 */
static size_t request(unsigned char *out, int port) {
    unsigned char block[128];
    char authority[32];
    static const unsigned char message[5] = {0, 0, 0, 0, 0};
    size_t b = 0, n = 0;

    snprintf(authority, sizeof authority, "127.0.0.1:%d", port);
    block[b++] = 0x83; /* :method POST */
    block[b++] = 0x86; /* :scheme http */
    b += literal(block + b, 4, PATH); /* :path */
    b += literal(block + b, 1, authority); /* :authority */
    /* content-type: literal without indexing, name index 31 = 15 + 16 (4-bit prefix) */
    memcpy(block + b, "\x0f\x10\x10" "application/grpc", 19);
    b += 19;
    memcpy(block + b, "\x00\x02te\x08trailers", 13); /* a new name: te */
    b += 13;

    memcpy(out, PREFACE, sizeof PREFACE - 1);
    n = sizeof PREFACE - 1;
    n += frame(out + n, SETTINGS, 0, 0, NULL, 0);
    n += frame(out + n, HEADERS, END_HEADERS, STREAM, block, b);
    n += frame(out + n, DATA, END_STREAM, STREAM, message, sizeof message);
    return n;
}

static int serving(int fd) {
    static unsigned char buffer[HEADER + MAX_FRAME];
    unsigned char reply[HEADER + 8], data[sizeof SERVING];
    size_t have = 0, got = 0;

    for (;;) {
        while (have >= HEADER) {
            size_t length = ((size_t)buffer[0] << 16) | ((size_t)buffer[1] << 8) | buffer[2];
            int type = buffer[3], flags = buffer[4];
            unsigned stream = ((unsigned)(buffer[5] & 0x7f) << 24) | ((unsigned)buffer[6] << 16)
                              | ((unsigned)buffer[7] << 8) | buffer[8];
            unsigned char *payload = buffer + HEADER;

            if (length > MAX_FRAME)
                return 0; /* larger than the SETTINGS we sent allow */
            if (have < HEADER + length)
                break;
            if (type == SETTINGS && !(flags & ACK)) {
                if (send_all(fd, reply, frame(reply, SETTINGS, ACK, 0, NULL, 0)))
                    return 0;
            } else if (type == PING && !(flags & ACK)) {
                if (length != 8 || send_all(fd, reply, frame(reply, PING, ACK, 0, payload, 8)))
                    return 0;
            } else if (type == GOAWAY || (type == RST_STREAM && stream == STREAM)) {
                return 0;
            } else if (stream == STREAM && (type == DATA || type == HEADERS)) {
                if (type == DATA) {
                    size_t start = 0, end = length;
                    if (flags & PADDED) {
                        if (length < 1 || payload[0] >= length)
                            return 0;
                        start = 1;
                        end = length - payload[0];
                    }
                    if (got + (end - start) > sizeof data)
                        return 0; /* longer than the answer SERVING is */
                    memcpy(data + got, payload + start, end - start);
                    got += end - start;
                }
                if (flags & END_STREAM)
                    return got == sizeof SERVING && memcmp(data, SERVING, got) == 0;
            }
            memmove(buffer, buffer + HEADER + length, have - HEADER - length);
            have -= HEADER + length;
        }
        ssize_t n = recv(fd, buffer + have, sizeof buffer - have, 0);
        if (n <= 0)
            return 0;
        have += (size_t)n;
    }
}

static int usage(const char *problem) {
    fprintf(stderr, "orchestrator-probe: %s\nusage: orchestrator-probe [--port N] "
            "[--timeout SECONDS] [--tls] [--tls-cert FILE --tls-key FILE]\n", problem);
    return 2;
}

static int python_probe(int argc, char **argv) {
    char **args = calloc((size_t)argc + 4, sizeof *args);
    if (!args)
        return 1;
    args[0] = PYTHON;
    args[1] = "-m";
    args[2] = "orchestrator.runtime";
    args[3] = "probe";
    for (int i = 1; i < argc; i++)
        args[i + 3] = argv[i];
    execv(PYTHON, args);
    perror("orchestrator-probe: exec " PYTHON);
    return 1;
}

int main(int argc, char **argv) {
    long port = 50051;
    double timeout = 2.0;
    int tls = 0;
    const char *env;

    for (int i = 1; i < argc; i++) {
        char *end;
        if (!strcmp(argv[i], "--tls")) {
            tls = 1;
        } else if (!strcmp(argv[i], "--tls-cert") || !strcmp(argv[i], "--tls-key")) {
            if (++i == argc)
                return usage("a value is missing");
            tls = 1;
        } else if (!strcmp(argv[i], "--port") && i + 1 < argc) {
            port = strtol(argv[++i], &end, 10);
            if (*end || end == argv[i] || port < 1 || port > 65535)
                return usage("--port: not a port number");
        } else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) {
            timeout = strtod(argv[++i], &end);
            if (*end || end == argv[i] || !(timeout > 0 && timeout < 86400))
                return usage("--timeout: not a number of seconds");
        } else {
            return usage("unknown or incomplete argument");
        }
    }
    env = getenv("ORCHESTRATOR_PROBE_TLS");
    if (tls || (env && !strcmp(env, "1")) || ((env = getenv("ORCHESTRATOR_PROBE_TLS_CERT")) && *env))
        return python_probe(argc, argv);

    struct itimerval deadline = {{0, 0}, {(time_t)timeout, (suseconds_t)((timeout - (long)timeout) * 1e6)}};
    signal(SIGALRM, on_alarm);
    if (setitimer(ITIMER_REAL, &deadline, NULL))
        return 1;

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {0};
    address.sin_family = AF_INET;
    address.sin_port = htons((unsigned short)port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&address, sizeof address))
        return 1;
    unsigned char out[512];
    if (send_all(fd, out, request(out, (int)port)))
        return 1;
    return serving(fd) ? 0 : 1;
}
