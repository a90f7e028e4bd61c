/* dcnet-cni-shim: the per-pod CNI process, a client of the node's dcnet-agent.
 *
 * Forwards the CNI invocation (every CNI_* environment variable and stdin, byte for
 * byte, plus CNI_NETNS opened here and passed as a descriptor with SCM_RIGHTS: the
 * agent may live in a mount namespace that cannot see that path) to the agent of this
 * network namespace over a unix socket, then writes the
 * agent's stdout and stderr back and exits with its exit code. The agent runs the same
 * Python plugin code (dcnet.cni.skel + the mode's plugin) with everything imported.
 *
 * Socket: DCNET_EXEC_DIR "/net-<inode of /proc/self/ns/net>.sock" (mode 0600, the agent
 * checks that the peer is root and in its namespace; this side checks the agent is
 * root). When no agent answers in full (socket missing, refused, declined, connection
 * lost mid-request) the shim execs DCNET_FALLBACK, the in-process Python plugin, with
 * the same environment and the same stdin bytes (kept in a memfd once read), so every
 * command still behaves per spec without the agent.
 *
 * Wire format (big-endian u32 lengths), one request per connection:
 *   request: "DCX1" u32 envlen env("K=V\0"...) u32 inlen stdin
 *   reply:   "DCX1" 'R' u32 exitcode u32 outlen stdout u32 errlen stderr
 *         or "DCX1" 'F' u32 len reason          (declined: run the fallback)
 * Written by `dcnet-cni install` with: cc -O2 -DDCNET_EXEC_DIR=... -DDCNET_FALLBACK=...
 * libc only.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef DCNET_EXEC_DIR
#define DCNET_EXEC_DIR "/run/dcnet/exec"
#endif
#ifndef DCNET_FALLBACK
#define DCNET_FALLBACK "/opt/cni/bin/dcnet-python"
#endif
#define MAX_STDIN (64u << 20)
#define MAX_REPLY (1u << 30)

extern char **environ;

struct buf { char *data; size_t len, cap; };

static int grow(struct buf *b, size_t need) {
    if (b->len + need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + need) cap *= 2;
    char *data = realloc(b->data, cap);
    if (!data) return -1;
    b->data = data;
    b->cap = cap;
    return 0;
}

static int put(struct buf *b, const void *p, size_t n) {
    if (grow(b, n)) return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

static int put_u32(struct buf *b, uint32_t v) {
    unsigned char x[4] = {v >> 24, v >> 16, v >> 8, v};
    return put(b, x, 4);
}

static uint32_t get_u32(const char *p) {
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

static int write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Run the in-process Python plugin. With stdin already consumed (in), hand it the same
 * bytes through a memfd (or an unlinked temporary file). Never returns. */
static void fallback(const struct buf *in, const char *why) {
    if (why) fprintf(stderr, "dcnet: %s; running the plugin in-process\n", why);
    /* tells the plugin it runs without the agent (STATUS reports fallback-only) */
    setenv("DCNET_FALLBACK", why ? why : "no dcnet-agent serves this network namespace", 1);
    if (in) {
        int fd = memfd_create("dcnet-stdin", 0);
        if (fd < 0) fd = open("/tmp", O_TMPFILE | O_RDWR, 0600);
        if (fd < 0 || write_all(fd, in->data, in->len) || lseek(fd, 0, SEEK_SET) < 0 ||
            dup2(fd, 0) < 0) {
            printf("{\"cniVersion\":\"1.1.0\",\"code\":5,\"msg\":\"dcnet: cannot hand stdin "
                   "to the in-process plugin\",\"details\":\"%s\"}\n", strerror(errno));
            exit(1);
        }
        if (fd != 0) close(fd);
    }
    char *argv[] = {(char *)DCNET_FALLBACK, NULL};
    execv(DCNET_FALLBACK, argv);
    printf("{\"cniVersion\":\"1.1.0\",\"code\":999,\"msg\":\"dcnet: cannot run the "
           "in-process plugin " DCNET_FALLBACK "\",\"details\":\"%s\"}\n", strerror(errno));
    exit(1);
}

static int connect_agent(void) {
    struct stat st;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (stat("/proc/self/ns/net", &st) < 0) return -1;
    int n = snprintf(addr.sun_path, sizeof addr.sun_path, "%s/net-%llu.sock",
                     DCNET_EXEC_DIR, (unsigned long long)st.st_ino);
    if (n < 0 || (size_t)n >= sizeof addr.sun_path) return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 ||
        getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || cred.uid != 0) {
        close(fd);  /* nobody there, or not root's agent: never talk to it */
        return -1;
    }
    return fd;
}

/* send() that also passes descriptor passfd (SCM_RIGHTS) with the first byte. */
static ssize_t send_with_fd(int sock, const char *p, size_t n, int passfd) {
    struct iovec iov = {.iov_base = (void *)p, .iov_len = n};
    union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                         .msg_controllen = sizeof ctl.buf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &passfd, sizeof(int));
    return sendmsg(sock, &msg, MSG_NOSIGNAL);
}

static int read_fd(int fd, struct buf *b, size_t limit) {
    for (;;) {
        if (grow(b, 65536)) return -1;
        ssize_t r = read(fd, b->data + b->len, 65536);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        if (r == 0) return 0;
        b->len += (size_t)r;
        if (b->len > limit) return -1;
    }
}

int main(void) {
    const char *command = getenv("CNI_COMMAND");
    int fd = connect_agent();
    if (fd < 0) fallback(NULL, NULL);  /* stdin untouched: the plugin reads it itself */

    struct buf in = {0}, req = {0}, rep = {0};
    /* as dcnet.cni.skel: no stdin for the about text and VERSION */
    if (command && *command && strcmp(command, "VERSION") != 0) {
        if (read_fd(0, &in, SIZE_MAX) < 0) {
            printf("{\"cniVersion\":\"1.1.0\",\"code\":5,\"msg\":\"error reading from stdin: "
                   "%s\"}\n", strerror(errno));
            return 1;
        }
        if (in.len > MAX_STDIN) {
            close(fd);
            fallback(&in, "stdin larger than the agent accepts");
        }
    }
    struct buf env = {0};
    for (char **e = environ; *e; e++)
        if (strncmp(*e, "CNI_", 4) == 0 && put(&env, *e, strlen(*e) + 1)) fallback(&in, NULL);
    if (put(&req, "DCX1", 4) || put_u32(&req, (uint32_t)env.len) ||
        put(&req, env.data, env.len) || put_u32(&req, (uint32_t)in.len) ||
        put(&req, in.data, in.len))
        fallback(&in, "out of memory");
    /* The pod's namespace as this process (the runtime's mount namespace) sees it: the
     * agent may not see CNI_NETNS at all, so it gets the open descriptor instead. */
    const char *netns = getenv("CNI_NETNS");
    int nsfd = netns && *netns ? open(netns, O_RDONLY | O_CLOEXEC) : -1;
    size_t off = 0;
    while (off < req.len) {
        ssize_t w = off == 0 && nsfd >= 0
                        ? send_with_fd(fd, req.data, req.len, nsfd)
                        : send(fd, req.data + off, req.len - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) fallback(&in, "dcnet-agent hung up before reading the request");
        off += (size_t)w;
    }
    if (nsfd >= 0) close(nsfd);
    if (read_fd(fd, &rep, MAX_REPLY) < 0)
        fallback(&in, "lost the connection to dcnet-agent mid-request");
    close(fd);

    const char *p = rep.data;
    size_t left = rep.len;
    if (left < 5 || memcmp(p, "DCX1", 4) != 0)
        fallback(&in, left ? "unreadable answer from dcnet-agent"
                           : "dcnet-agent closed the connection without an answer");
    if (p[4] == 'F') fallback(&in, NULL);  /* declined (stopping, other namespace) */
    if (p[4] != 'R' || left < 13) fallback(&in, "unreadable answer from dcnet-agent");
    uint32_t code = get_u32(p + 5), out_len = get_u32(p + 9);
    if (left - 13 < out_len || left - 13 - out_len < 4)
        fallback(&in, "truncated answer from dcnet-agent");
    const char *out = p + 13, *err = out + out_len + 4;
    uint32_t err_len = get_u32(out + out_len);
    if (left - 17 - out_len != err_len) fallback(&in, "truncated answer from dcnet-agent");
    write_all(1, out, out_len);
    write_all(2, err, err_len);
    return (int)(code & 0xff);
}
