#define _XOPEN_SOURCE 700 /* nftw */
#include "formats/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int ul_map_file(const char *path, void **map, size_t *size, UlError *e) {
    *map = NULL;
    *size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ul_err(e, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);
        return ul_err(e, "%s: cannot stat: %s", path, strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return ul_err(e, "%s: not a regular file", path);
    }
    if (st.st_size > 0) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int err = errno;
            close(fd);
            return ul_err(e, "%s: cannot mmap %lld bytes: %s", path, (long long)st.st_size, strerror(err));
        }
        *map = p;
        *size = (size_t)st.st_size;
    }
    close(fd);
    return 0;
}

void ul_unmap_file(void *map, size_t size) {
    if (map && size) munmap(map, size);
}

int ul_read_file(const char *path, size_t max_bytes, char **out, size_t *len, UlError *e) {
    *out = NULL;
    void *map;
    size_t size;
    if (ul_map_file(path, &map, &size, e)) return -1;
    if (size > max_bytes) {
        ul_unmap_file(map, size);
        return ul_err(e, "%s: file too large (%zu bytes, limit %zu)", path, size, max_bytes);
    }
    char *buf = ul_malloc(size + 1); /* [size + 1] */
    if (size) memcpy(buf, map, size);
    buf[size] = 0;
    ul_unmap_file(map, size);
    *out = buf;
    if (len) *len = size;
    return 0;
}

int ul_afile_open(UlAtomicFile *f, const char *path, UlError *e) {
    size_t n = strlen(path);
    f->path = ul_strdup(path);
    f->tmp = ul_malloc(n + 5);
    memcpy(f->tmp, path, n);
    memcpy(f->tmp + n, ".tmp", 5);
    f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (f->fd < 0) {
        int err = errno;
        ul_err(e, "%s: cannot create: %s", f->tmp, strerror(err));
        free(f->path);
        free(f->tmp);
        f->path = f->tmp = NULL;
        return -1;
    }
    return 0;
}

int ul_afile_write(UlAtomicFile *f, const void *buf, size_t n, UlError *e) {
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t w = write(f->fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return ul_err(e, "%s: write failed: %s", f->tmp, strerror(errno));
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

void ul_afile_abort(UlAtomicFile *f) {
    if (f->fd >= 0) close(f->fd);
    if (f->tmp) unlink(f->tmp);
    free(f->path);
    free(f->tmp);
    f->fd = -1;
    f->path = f->tmp = NULL;
}

int ul_afile_commit(UlAtomicFile *f, UlError *e) {
    int rc = 0;
    if (fsync(f->fd) != 0) rc = ul_err(e, "%s: fsync failed: %s", f->tmp, strerror(errno));
    if (close(f->fd) != 0 && rc == 0) rc = ul_err(e, "%s: close failed: %s", f->tmp, strerror(errno));
    f->fd = -1;
    if (rc == 0 && rename(f->tmp, f->path) != 0)
        rc = ul_err(e, "%s: cannot rename %s into place: %s", f->path, f->tmp, strerror(errno));
    if (rc == 0) {
        free(f->tmp); /* renamed: nothing left to remove */
        f->tmp = NULL;
    }
    ul_afile_abort(f);
    return rc;
}

int ul_write_file_atomic(const char *path, const void *buf, size_t n, UlError *e) {
    UlAtomicFile f;
    if (ul_afile_open(&f, path, e)) return -1;
    if (ul_afile_write(&f, buf, n, e)) {
        ul_afile_abort(&f);
        return -1;
    }
    return ul_afile_commit(&f, e);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int ul_remove_tree(const char *path) { return nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }
