/* A read-only file system under a running process, for `scripts/chaos.sh read-only`.
 *
 * Linux refuses `mount -o remount,ro` (EBUSY) while a process has a file of that mount open
 * for writing, and a daemon's SQLite database always is; an ext4 that remounts itself
 * read-only after an I/O error (errors=remount-ro) cannot be made writable again without
 * unmounting it. So this LD_PRELOAD library makes the writes fail instead, as the kernel does
 * on a read-only mount: while the file CHAOS_RO_FLAG exists, every write, truncate, sync,
 * allocation, unlink and open for writing of a file on the file system of CHAOS_RO_DIR fails
 * with EROFS. Other files (logs, sockets, pipes) are untouched. Shared memory maps (SQLite's
 * -shm) are memory and stay writable, as they do on a real read-only remount.
 *
 *   cc -shared -fPIC -O2 -o chaos_readonly.so scripts/chaos_readonly.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static dev_t ro_dev;
static int ro_known = -1; /* -1 not looked up yet, 0 no CHAOS_RO_DIR, 1 ro_dev set */

static int flag_on(void) {
    const char *flag = getenv("CHAOS_RO_FLAG");
    return flag && access(flag, F_OK) == 0;
}

static int dev_known(void) {
    if (ro_known < 0) {
        const char *dir = getenv("CHAOS_RO_DIR");
        struct stat st;
        ro_known = dir && stat(dir, &st) == 0;
        if (ro_known) ro_dev = st.st_dev;
    }
    return ro_known;
}

static int fd_is_ro(int fd) {
    struct stat st;
    if (!dev_known() || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_dev != ro_dev)
        return 0;
    return flag_on();
}

/* A path on the read-only file system (the file, or the directory it would be made in). */
static int path_is_ro(int dirfd, const char *path) {
    struct stat st;
    if (!dev_known()) return 0;
    if (fstatat(dirfd, path, &st, 0) != 0) {
        /* Not there yet: look at its directory. */
        char dir[4096];
        size_t n = 0;
        const char *slash = NULL;
        for (const char *p = path; *p; p++)
            if (*p == '/') slash = p;
        if (!slash) {
            if (fstatat(dirfd, ".", &st, 0) != 0) return 0;
        } else {
            n = (size_t)(slash - path);
            if (n == 0) n = 1;
            if (n >= sizeof dir) return 0;
            for (size_t i = 0; i < n; i++) dir[i] = path[i];
            dir[n] = 0;
            if (fstatat(dirfd, dir, &st, 0) != 0) return 0;
        }
    }
    return st.st_dev == ro_dev && flag_on();
}

#define REAL(name, ret, ...)                                         \
    static ret (*real_##name)(__VA_ARGS__);                          \
    if (!real_##name) real_##name = dlsym(RTLD_NEXT, #name)

#define FAIL_FD(fd, errval)                                          \
    if (fd_is_ro(fd)) {                                              \
        errno = EROFS;                                               \
        return errval;                                               \
    }

ssize_t write(int fd, const void *buf, size_t n) {
    REAL(write, ssize_t, int, const void *, size_t);
    FAIL_FD(fd, -1);
    return real_write(fd, buf, n);
}
ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    REAL(pwrite, ssize_t, int, const void *, size_t, off_t);
    FAIL_FD(fd, -1);
    return real_pwrite(fd, buf, n, off);
}
ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
    REAL(pwrite64, ssize_t, int, const void *, size_t, off_t);
    FAIL_FD(fd, -1);
    return real_pwrite64(fd, buf, n, off);
}
ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    REAL(writev, ssize_t, int, const struct iovec *, int);
    FAIL_FD(fd, -1);
    return real_writev(fd, iov, cnt);
}
ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) {
    REAL(pwritev, ssize_t, int, const struct iovec *, int, off_t);
    FAIL_FD(fd, -1);
    return real_pwritev(fd, iov, cnt, off);
}
int ftruncate(int fd, off_t len) {
    REAL(ftruncate, int, int, off_t);
    FAIL_FD(fd, -1);
    return real_ftruncate(fd, len);
}
int ftruncate64(int fd, off_t len) {
    REAL(ftruncate64, int, int, off_t);
    FAIL_FD(fd, -1);
    return real_ftruncate64(fd, len);
}
int fsync(int fd) {
    REAL(fsync, int, int);
    FAIL_FD(fd, -1);
    return real_fsync(fd);
}
int fdatasync(int fd) {
    REAL(fdatasync, int, int);
    FAIL_FD(fd, -1);
    return real_fdatasync(fd);
}
int fallocate(int fd, int mode, off_t off, off_t len) {
    REAL(fallocate, int, int, int, off_t, off_t);
    FAIL_FD(fd, -1);
    return real_fallocate(fd, mode, off, len);
}
int posix_fallocate(int fd, off_t off, off_t len) {
    REAL(posix_fallocate, int, int, off_t, off_t);
    if (fd_is_ro(fd)) return EROFS;
    return real_posix_fallocate(fd, off, len);
}
int unlink(const char *path) {
    REAL(unlink, int, const char *);
    if (path_is_ro(AT_FDCWD, path)) {
        errno = EROFS;
        return -1;
    }
    return real_unlink(path);
}

static int wants_write(int flags) {
    return (flags & O_ACCMODE) != O_RDONLY || (flags & (O_CREAT | O_TRUNC));
}
#define OPEN_BODY(call_real, dirfd)                                  \
    mode_t mode = 0;                                                 \
    if (flags & (O_CREAT | O_TMPFILE)) {                             \
        va_list ap;                                                  \
        va_start(ap, flags);                                         \
        mode = va_arg(ap, mode_t);                                   \
        va_end(ap);                                                  \
    }                                                                \
    if (wants_write(flags) && path_is_ro(dirfd, path)) {             \
        errno = EROFS;                                               \
        return -1;                                                   \
    }                                                                \
    return call_real;

int open(const char *path, int flags, ...) {
    REAL(open, int, const char *, int, ...);
    OPEN_BODY(real_open(path, flags, mode), AT_FDCWD)
}
int open64(const char *path, int flags, ...) {
    REAL(open64, int, const char *, int, ...);
    OPEN_BODY(real_open64(path, flags, mode), AT_FDCWD)
}
int openat(int dirfd, const char *path, int flags, ...) {
    REAL(openat, int, int, const char *, int, ...);
    OPEN_BODY(real_openat(dirfd, path, flags, mode), dirfd)
}
int openat64(int dirfd, const char *path, int flags, ...) {
    REAL(openat64, int, int, const char *, int, ...);
    OPEN_BODY(real_openat64(dirfd, path, flags, mode), dirfd)
}
