/* Small file helpers shared by the format readers/writers (internal to src/formats). */
#ifndef UL_FILEIO_H
#define UL_FILEIO_H

#include <stddef.h>
#include <stdint.h>

#include "core/common.h"

/* Maps PATH read-only. An empty file gives *map = NULL, *size = 0 (not an error). */
int ul_map_file(const char *path, void **map, size_t *size, UlError *e);
void ul_unmap_file(void *map, size_t size);

/* Reads a whole (text) file into a malloc'd, NUL-terminated buffer; files over max_bytes
 * are an error. *len (optional) gets the byte count. */
int ul_read_file(const char *path, size_t max_bytes, char **out, size_t *len, UlError *e);

/* Atomic file replacement: writes go to PATH.tmp; commit fsyncs, closes and renames it
 * onto PATH; abort (or a failed commit) removes PATH.tmp. */
typedef struct {
    int fd;
    char *path, *tmp;
} UlAtomicFile;

int ul_afile_open(UlAtomicFile *f, const char *path, UlError *e);
int ul_afile_write(UlAtomicFile *f, const void *buf, size_t n, UlError *e);
int ul_afile_commit(UlAtomicFile *f, UlError *e);
void ul_afile_abort(UlAtomicFile *f);

/* Writes buf[n] to PATH atomically (open + write + commit). */
int ul_write_file_atomic(const char *path, const void *buf, size_t n, UlError *e);

/* Removes PATH and everything below it (no symlinks followed). 0 on success. */
int ul_remove_tree(const char *path);

/* Little-endian loads/stores (the file formats are little-endian; alignment-safe). */
static inline uint64_t ul_load_le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static inline uint32_t ul_load_le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline void ul_store_le64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline void ul_store_le32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

#endif
