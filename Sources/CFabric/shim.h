// libfabric for Swift. libfabric's own `static inline` API (fi_domain, fi_endpoint, fi_mr_reg,
// fi_read, fi_send, fi_recv, fi_cq_read, fi_cq_sread, fi_av_insert, fi_close, ...) imports as is;
// this header adds what Swift cannot import (function-like macros, macro constants whose
// expansion is a cast) and reaches the library's five exported functions through dlopen.
//
// Why dlopen: Debian's libfabric links the psm/psm2 providers, whose load-time constructors
// calibrate a timer with ~800 sleeps of 125 µs — about 200 ms added to the start of every
// process that links libfabric. Weft's CLI and every function linking the SDK would pay that
// at each start (a cold start, a `weft state get`). Loaded on first use instead, only a
// process that opens a fabric endpoint pays it, once; and a machine without libfabric still
// runs everything else.
#ifndef WEFT_CFABRIC_SHIM_H
#define WEFT_CFABRIC_SHIM_H

#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <rdma/fabric.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_eq.h>
#include <rdma/fi_rma.h>
#include <rdma/fi_errno.h>

/// The exported libfabric functions, resolved once from libfabric.so.1.
struct weft_fabric_api {
    int (*getinfo)(uint32_t, const char *, const char *, uint64_t, const struct fi_info *, struct fi_info **);
    void (*freeinfo)(struct fi_info *);
    struct fi_info *(*dupinfo)(const struct fi_info *);
    int (*fabric)(struct fi_fabric_attr *, struct fid_fabric **, void *);
    const char *(*strerror)(int);
    const char *error;   // why loading failed, or NULL
};

/// The table, loaded on first call (thread-safe; statics live inside the function because the
/// Swift importer emits functions, not header globals).
static inline struct weft_fabric_api *weft_fabric_api(void) {
    static struct weft_fabric_api table;
    static int loaded;
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    if (__atomic_load_n(&loaded, __ATOMIC_ACQUIRE)) return &table;
    pthread_mutex_lock(&lock);
    if (!loaded) {
        void *lib = dlopen("libfabric.so.1", RTLD_NOW | RTLD_LOCAL);
        if (!lib) {
            table.error = dlerror();
        } else {
            table.getinfo = (int (*)(uint32_t, const char *, const char *, uint64_t, const struct fi_info *, struct fi_info **))dlsym(lib, "fi_getinfo");
            table.freeinfo = (void (*)(struct fi_info *))dlsym(lib, "fi_freeinfo");
            table.dupinfo = (struct fi_info *(*)(const struct fi_info *))dlsym(lib, "fi_dupinfo");
            table.fabric = (int (*)(struct fi_fabric_attr *, struct fid_fabric **, void *))dlsym(lib, "fi_fabric");
            table.strerror = (const char *(*)(int))dlsym(lib, "fi_strerror");
            if (!table.getinfo || !table.freeinfo || !table.dupinfo || !table.fabric || !table.strerror) {
                table.getinfo = 0;
                table.error = "libfabric.so.1 lacks fi_getinfo/fi_fabric/fi_dupinfo/fi_freeinfo/fi_strerror";
            }
        }
        __atomic_store_n(&loaded, 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&lock);
    return &table;
}

/// NULL when libfabric is loaded and usable, else why not (e.g. not installed).
static inline const char *weft_fabric_load_error(void) {
    struct weft_fabric_api *api = weft_fabric_api();
    return api->getinfo ? 0 : (api->error ? api->error : "libfabric not loaded");
}

static inline int weft_fi_getinfo(uint32_t version, const char *node, const char *service, uint64_t flags,
                                  const struct fi_info *hints, struct fi_info **info) {
    if (weft_fabric_load_error()) return -FI_ENOSYS;
    return weft_fabric_api()->getinfo(version, node, service, flags, hints, info);
}

static inline void weft_fi_freeinfo(struct fi_info *info) {
    if (!weft_fabric_load_error()) weft_fabric_api()->freeinfo(info);
}

static inline struct fi_info *weft_fi_dupinfo(const struct fi_info *info) {
    return weft_fabric_load_error() ? 0 : weft_fabric_api()->dupinfo(info);
}

static inline int weft_fi_fabric(struct fi_fabric_attr *attr, struct fid_fabric **fabric, void *context) {
    if (weft_fabric_load_error()) return -FI_ENOSYS;
    return weft_fabric_api()->fabric(attr, fabric, context);
}

static inline const char *weft_fi_strerror(int errnum) {
    return weft_fabric_load_error() ? "libfabric is not available" : weft_fabric_api()->strerror(errnum);
}

/// FI_VERSION(FI_MAJOR_VERSION, FI_MINOR_VERSION): the API version of the headers we compiled against.
static inline uint32_t weft_fi_version(void) {
    return FI_VERSION(FI_MAJOR_VERSION, FI_MINOR_VERSION);
}

/// fi_allocinfo() is a macro around fi_dupinfo(NULL).
static inline struct fi_info *weft_fi_allocinfo(void) {
    return weft_fi_dupinfo(0);
}

/// FI_ADDR_UNSPEC is `((uint64_t) -1)`, which does not import.
static inline uint64_t weft_fi_addr_unspec(void) {
    return FI_ADDR_UNSPEC;
}

/// The per-operation context handed to libfabric as `void *context`. `fi_ctx` comes first so that
/// providers that require FI_CONTEXT / FI_CONTEXT2 mode get the scratch space they own while the
/// operation is outstanding (fi_context2 is the larger of the two).
struct weft_fabric_op {
    struct fi_context2 fi_ctx;
    uint32_t kind;    // WeftFabricOpKind
    uint32_t index;   // receive-buffer / send-slot / read-slot index
    uint64_t user;    // the caller's context value
};

enum {
    WEFT_FABRIC_OP_RECV = 1,
    WEFT_FABRIC_OP_SEND = 2,
    WEFT_FABRIC_OP_READ = 3,
};

#endif
