/*
 * crashfs: a FUSE passthrough file system that forgets unsynced data when it
 * exits, as a power cut would. Tests only (test/powercut/).
 *
 *   [CRASHFS_SEED=N] crashfs BACKING_DIR MOUNTPOINT -f -s [-o auto_unmount]
 *
 * Every write reaches BACKING_DIR at once (the kernel sends each write
 * through: no writeback cache), but for each file crashfs remembers what the
 * writes since its last fsync/fdatasync overwrote (the old bytes, and the
 * file's size before the first of them). A write through a descriptor opened
 * O_DSYNC or O_SYNC is durable when it returns: that write only, not the
 * file's other unsynced writes (the FUSE_FSYNC the kernel sends right after
 * such a write is taken as part of it, not as an fsync of the whole file). A
 * truncate is undone like a write. When crashfs exits (SIGTERM, or an unmount)
 * it puts every file back as a power cut could have left it, then prints what
 * it did ("crashfs: power cut: ...", with the files' paths):
 *
 *   - CRASHFS_SEED unset or 0: everything back to its last sync (old bytes
 *     written back newest first, then the size cut to what it was);
 *   - CRASHFS_SEED=N (N > 0): a file that grew keeps a random part of what
 *     was appended since its last sync (a prefix, cut at any byte: a record
 *     may be torn), and each unsynced overwrite is undone or kept at random
 *     (write-back in any order). Seeded by N: the same run of writes gives
 *     the same cut.
 *
 * What it does not model: metadata. Creating, renaming and deleting files
 * are durable at once (as if every directory were synced), so a missing
 * directory fsync goes unnoticed; a file created and never synced comes back
 * empty, not missing. Appended data is kept as a prefix (as ext4's ordered
 * mode and XFS keep an appended file): a hole of zeros in the middle of an
 * appended run, which other file systems can leave, is not made.
 */
#define FUSE_USE_VERSION 31
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <unistd.h>

#define MAX_FD 65536

static int basefd = -1;
/* Per backing descriptor: its writes are durable on return (opened O_DSYNC/O_SYNC). */
static unsigned char syncfd[MAX_FD];
/* Per backing descriptor: an O_DSYNC write was made and the kernel's FUSE_FSYNC for it is still to come. */
static unsigned char dsync_fsync_due[MAX_FD];

struct undo {
  off_t off;
  size_t len;
  char *old;
  struct undo *prev;
};

struct dirty {
  dev_t dev;
  ino_t ino;
  int fd;          /* our own read-write descriptor of the file (reopened through /proc) */
  off_t orig_size; /* its size at its last sync */
  struct undo *last;
  struct dirty *next;
};

static struct dirty *dirty_files;
static unsigned long long undo_records_total, syncs_total;

static const char *rel(const char *path) {
  return path[1] == '\0' ? "." : path + 1;
}

static void free_undo(struct dirty *d) {
  struct undo *u = d->last;
  while (u != NULL) {
    struct undo *p = u->prev;
    free(u->old);
    free(u);
    u = p;
  }
  d->last = NULL;
}

static void forget(dev_t dev, ino_t ino) {
  for (struct dirty **pp = &dirty_files; *pp != NULL; pp = &(*pp)->next) {
    struct dirty *d = *pp;
    if (d->dev == dev && d->ino == ino) {
      *pp = d->next;
      free_undo(d);
      close(d->fd);
      free(d);
      return;
    }
  }
}

static struct dirty *find_or_add(int fd, const struct stat *st) {
  for (struct dirty *d = dirty_files; d != NULL; d = d->next)
    if (d->dev == st->st_dev && d->ino == st->st_ino) return d;
  char proc[64];
  snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
  int own = open(proc, O_RDWR);
  if (own < 0) return NULL;
  struct dirty *d = calloc(1, sizeof *d);
  if (d == NULL) {
    close(own);
    return NULL;
  }
  d->dev = st->st_dev;
  d->ino = st->st_ino;
  d->fd = own;
  d->orig_size = st->st_size;
  d->next = dirty_files;
  dirty_files = d;
  return d;
}

/* Before [off, off+len) of fd's file changes unsynced: keep the bytes there now. */
static int remember(int fd, off_t off, size_t len) {
  struct stat st;
  if (fstat(fd, &st) < 0) return -errno;
  struct dirty *d = find_or_add(fd, &st);
  if (d == NULL) return -EIO;
  if (off >= st.st_size || len == 0) return 0; /* only new bytes: the size cut undoes them */
  size_t keep = (size_t)(st.st_size - off) < len ? (size_t)(st.st_size - off) : len;
  struct undo *u = calloc(1, sizeof *u);
  if (u == NULL) return -EIO;
  u->old = malloc(keep);
  if (u->old == NULL) {
    free(u);
    return -EIO;
  }
  ssize_t got = pread(d->fd, u->old, keep, off); /* our own read-write descriptor: the caller's may be write-only */
  if (got < 0) {
    int e = errno;
    free(u->old);
    free(u);
    return -e;
  }
  u->off = off;
  u->len = (size_t)got;
  u->prev = d->last;
  d->last = u;
  undo_records_total++;
  return 0;
}

static void synced(int fd) {
  struct stat st;
  if (fstat(fd, &st) < 0) return;
  syncs_total++;
  forget(st.st_dev, st.st_ino);
}

/* A write through an O_DSYNC descriptor ended at `end` and is durable: the size cut must not take it back. */
static void dsynced(int fd, off_t end) {
  struct stat st;
  if (fstat(fd, &st) < 0) return;
  for (struct dirty *d = dirty_files; d != NULL; d = d->next)
    if (d->dev == st.st_dev && d->ino == st.st_ino && d->orig_size < end) d->orig_size = end;
}

static void *cfs_init(struct fuse_conn_info *conn, struct fuse_config *cfg) {
  (void)conn;
  cfg->use_ino = 1;
  cfg->hard_remove = 1;   /* no .fuse_hidden files: an unlinked open file is reached by its handle */
  cfg->nullpath_ok = 1;
  cfg->direct_io = 0;
  cfg->kernel_cache = 0;
  return NULL;
}

static int cfs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi) {
  int r = fi != NULL ? fstat((int)fi->fh, st) : fstatat(basefd, rel(path), st, AT_SYMLINK_NOFOLLOW);
  return r < 0 ? -errno : 0;
}

static int cfs_access(const char *path, int mask) {
  return faccessat(basefd, rel(path), mask, 0) < 0 ? -errno : 0;
}

static int cfs_mkdir(const char *path, mode_t mode) {
  return mkdirat(basefd, rel(path), mode) < 0 ? -errno : 0;
}

static int victim(const char *path, struct stat *st) {
  return fstatat(basefd, rel(path), st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st->st_mode) && st->st_nlink == 1;
}

static int cfs_unlink(const char *path) {
  struct stat st;
  int gone = victim(path, &st);
  if (unlinkat(basefd, rel(path), 0) < 0) return -errno;
  if (gone) forget(st.st_dev, st.st_ino);
  return 0;
}

static int cfs_rmdir(const char *path) {
  return unlinkat(basefd, rel(path), AT_REMOVEDIR) < 0 ? -errno : 0;
}

static int cfs_rename(const char *from, const char *to, unsigned int flags) {
  struct stat st;
  int gone = victim(to, &st);
  if (renameat2(basefd, rel(from), basefd, rel(to), flags) < 0) return -errno;
  if (gone) forget(st.st_dev, st.st_ino);
  return 0;
}

static int cfs_chmod(const char *path, mode_t mode, struct fuse_file_info *fi) {
  int r = fi != NULL ? fchmod((int)fi->fh, mode) : fchmodat(basefd, rel(path), mode, 0);
  return r < 0 ? -errno : 0;
}

static int cfs_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi) {
  int r = fi != NULL ? futimens((int)fi->fh, tv) : utimensat(basefd, rel(path), tv, AT_SYMLINK_NOFOLLOW);
  return r < 0 ? -errno : 0;
}

static int cfs_truncate(const char *path, off_t size, struct fuse_file_info *fi) {
  int fd = fi != NULL ? (int)fi->fh : openat(basefd, rel(path), O_RDWR);
  if (fd < 0) return -errno;
  int r = 0;
  struct stat st;
  if (fstat(fd, &st) < 0) r = -errno;
  else if (size < st.st_size) r = remember(fd, size, (size_t)(st.st_size - size));
  else r = remember(fd, st.st_size, 0); /* growing: only note the size to cut back to */
  if (r == 0 && ftruncate(fd, size) < 0) r = -errno;
  if (fi == NULL) close(fd);
  return r;
}

static int open_flags(int flags, int *is_sync) {
  *is_sync = (flags & (O_DSYNC | O_SYNC)) != 0;
  /* The backing file need not be durable (the test only cares about what crashfs keeps); O_APPEND is
   * dropped because the kernel already gives each write its offset, and pwrite on an O_APPEND file would
   * ignore it. */
  return flags & ~(O_DSYNC | O_SYNC | O_APPEND);
}

static int track(int fd, int is_sync) {
  if (fd >= MAX_FD) {
    close(fd);
    return -EMFILE;
  }
  syncfd[fd] = (unsigned char)is_sync;
  dsync_fsync_due[fd] = 0;
  return 0;
}

static int cfs_create(const char *path, mode_t mode, struct fuse_file_info *fi) {
  int is_sync;
  int fd = openat(basefd, rel(path), open_flags(fi->flags, &is_sync) | O_CREAT, mode);
  if (fd < 0) return -errno;
  int r = track(fd, is_sync);
  if (r < 0) return r;
  fi->fh = (uint64_t)fd;
  return 0;
}

static int cfs_open(const char *path, struct fuse_file_info *fi) {
  int is_sync;
  int flags = open_flags(fi->flags, &is_sync);
  int fd = openat(basefd, rel(path), flags & ~O_TRUNC);
  if (fd < 0) return -errno;
  if (flags & O_TRUNC) {
    struct stat st;
    int r = fstat(fd, &st) < 0 ? -errno : remember(fd, 0, (size_t)st.st_size);
    if (r == 0 && ftruncate(fd, 0) < 0) r = -errno;
    if (r < 0) {
      close(fd);
      return r;
    }
  }
  int r = track(fd, is_sync);
  if (r < 0) return r;
  fi->fh = (uint64_t)fd;
  return 0;
}

static int cfs_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  (void)path;
  ssize_t n = pread((int)fi->fh, buf, size, off);
  return n < 0 ? -errno : (int)n;
}

static int cfs_write(const char *path, const char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  (void)path;
  int fd = (int)fi->fh;
  if (!syncfd[fd]) {
    int r = remember(fd, off, size);
    if (r < 0) return r;
  }
  ssize_t n = pwrite(fd, buf, size, off);
  if (n < 0) return -errno;
  if (syncfd[fd]) {
    dsynced(fd, off + n); /* O_DSYNC: this write is durable (not the file's other unsynced ones) */
    dsync_fsync_due[fd] = 1;
  }
  return (int)n;
}

static int cfs_statfs(const char *path, struct statvfs *st) {
  (void)path;
  return fstatvfs(basefd, st) < 0 ? -errno : 0;
}

static int cfs_flush(const char *path, struct fuse_file_info *fi) {
  (void)path;
  (void)fi;
  return 0; /* close() is not a sync */
}

static int cfs_release(const char *path, struct fuse_file_info *fi) {
  (void)path;
  close((int)fi->fh);
  return 0;
}

static int cfs_fsync(const char *path, int datasync, struct fuse_file_info *fi) {
  (void)path;
  (void)datasync; /* metadata is durable at once here, so fsync and fdatasync are the same */
  int fd = (int)fi->fh;
  if (dsync_fsync_due[fd]) {
    /* The kernel syncs an O_DSYNC write by sending FUSE_FSYNC after it: that covers the write's range
     * only (already taken as durable), not the file's other unsynced writes. (An fsync() the program
     * itself makes right after such a write is taken the same way: our node makes none.) */
    dsync_fsync_due[fd] = 0;
    return 0;
  }
  synced(fd);
  return 0;
}

static int cfs_opendir(const char *path, struct fuse_file_info *fi) {
  int fd = openat(basefd, rel(path), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return -errno;
  DIR *d = fdopendir(fd);
  if (d == NULL) {
    int e = errno;
    close(fd);
    return -e;
  }
  fi->fh = (uint64_t)(uintptr_t)d;
  return 0;
}

static int cfs_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off, struct fuse_file_info *fi,
                       enum fuse_readdir_flags flags) {
  (void)path;
  (void)off;
  (void)flags;
  DIR *d = (DIR *)(uintptr_t)fi->fh;
  rewinddir(d);
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    struct stat st;
    memset(&st, 0, sizeof st);
    st.st_ino = e->d_ino;
    st.st_mode = (mode_t)DTTOIF(e->d_type);
    if (fill(buf, e->d_name, &st, 0, 0)) break;
  }
  return 0;
}

static int cfs_releasedir(const char *path, struct fuse_file_info *fi) {
  (void)path;
  closedir((DIR *)(uintptr_t)fi->fh);
  return 0;
}

static int cfs_fsyncdir(const char *path, int datasync, struct fuse_file_info *fi) {
  (void)path;
  (void)datasync;
  (void)fi;
  return 0; /* directories are durable at once here */
}

static const struct fuse_operations ops = {
    .init = cfs_init,
    .getattr = cfs_getattr,
    .access = cfs_access,
    .mkdir = cfs_mkdir,
    .unlink = cfs_unlink,
    .rmdir = cfs_rmdir,
    .rename = cfs_rename,
    .chmod = cfs_chmod,
    .utimens = cfs_utimens,
    .truncate = cfs_truncate,
    .create = cfs_create,
    .open = cfs_open,
    .read = cfs_read,
    .write = cfs_write,
    .statfs = cfs_statfs,
    .flush = cfs_flush,
    .release = cfs_release,
    .fsync = cfs_fsync,
    .opendir = cfs_opendir,
    .readdir = cfs_readdir,
    .releasedir = cfs_releasedir,
    .fsyncdir = cfs_fsyncdir,
};

static unsigned long long rng_state;

/* xorshift64*: a seeded, repeatable choice for each file and write. */
static unsigned long long rnd(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 2685821657736338717ULL;
}

/* The power cut: every file back to its last sync, or (seeded) to one of the states it could be in. */
static void lose_unsynced(unsigned long long seed) {
  unsigned long long files = 0, bytes = 0, cut = 0, kept = 0;
  rng_state = seed * 0x9E3779B97F4A7C15ULL + 1;
  char names[4096] = "";
  size_t used = 0;
  for (struct dirty *d = dirty_files; d != NULL; d = d->next) {
    files++;
    for (struct undo *u = d->last; u != NULL; u = u->prev) {
      if (seed != 0 && rnd() % 2 == 0) {
        kept += u->len; /* this overwrite reached the disk before the power went */
        continue;
      }
      if (pwrite(d->fd, u->old, u->len, u->off) != (ssize_t)u->len) fprintf(stderr, "crashfs: undo write failed: %s\n", strerror(errno));
      bytes += u->len;
    }
    struct stat st;
    if (fstat(d->fd, &st) == 0 && st.st_size != d->orig_size) {
      /* Grown: cut back (seeded: keep a random prefix of what was appended). Shrunk: back to the size. */
      off_t grown = st.st_size > d->orig_size ? st.st_size - d->orig_size : 0;
      off_t keep = seed == 0 || grown == 0 ? 0 : (off_t)(rnd() % (unsigned long long)(grown + 1));
      cut += (unsigned long long)(grown - keep);
      kept += (unsigned long long)keep;
      if (ftruncate(d->fd, d->orig_size + keep) < 0) fprintf(stderr, "crashfs: undo truncate failed: %s\n", strerror(errno));
    }
    fsync(d->fd);
    char proc[64], path[PATH_MAX];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", d->fd);
    ssize_t n = readlink(proc, path, sizeof path - 1);
    if (n > 0 && used + (size_t)n + 2 < sizeof names) {
      path[n] = '\0';
      used += (size_t)snprintf(names + used, sizeof names - used, "%s%s", used == 0 ? "" : " ", path);
    }
  }
  fprintf(stderr, "crashfs: power cut: %llu files put back (%llu bytes rewritten, %llu bytes cut, %llu unsynced bytes kept, seed %llu); %llu syncs, %llu undo records in all; files: %s\n",
          files, bytes, cut, kept, seed, syncs_total, undo_records_total, names);
}

int main(int argc, char *argv[]) {
  if (argc < 3) {
    fprintf(stderr, "usage: crashfs BACKING_DIR MOUNTPOINT [fuse options]\n");
    return 2;
  }
  basefd = open(argv[1], O_RDONLY | O_DIRECTORY);
  if (basefd < 0) {
    fprintf(stderr, "crashfs: %s: %s\n", argv[1], strerror(errno));
    return 2;
  }
  const char *seed = getenv("CRASHFS_SEED");
  /* Die with the process that started us (a test runner killed before its teardown): no mount left
   * behind (auto_unmount's helper unmounts once we are gone). */
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  argv[1] = argv[0];
  int rc = fuse_main(argc - 1, argv + 1, &ops, NULL);
  lose_unsynced(seed == NULL ? 0 : strtoull(seed, NULL, 10));
  return rc;
}
