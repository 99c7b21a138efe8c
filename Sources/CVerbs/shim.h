// libibverbs, only for RDMA device detection, loaded with dlopen on first use: linking it would
// load every RDMA provider library (and their constructors) into each Weft process at start.
#ifndef WEFT_CVERBS_SHIM_H
#define WEFT_CVERBS_SHIM_H
#include <dlfcn.h>
#include <errno.h>
#include <stddef.h>
#include <infiniband/verbs.h>

/// The device names libibverbs reports, via `body(name, context)` for each; returns the count,
/// or -1 with `*error` set (e.g. "libibverbs.so.1: cannot open ..." or errno from the list call).
static inline int weft_ibv_devices(void (*body)(const char *, void *), void *context, const char **error, int *list_errno) {
    void *lib = dlopen("libibverbs.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        *error = dlerror();
        return -1;
    }
    struct ibv_device **(*get_list)(int *) = (struct ibv_device **(*)(int *))dlsym(lib, "ibv_get_device_list");
    void (*free_list)(struct ibv_device **) = (void (*)(struct ibv_device **))dlsym(lib, "ibv_free_device_list");
    const char *(*get_name)(struct ibv_device *) = (const char *(*)(struct ibv_device *))dlsym(lib, "ibv_get_device_name");
    if (!get_list || !free_list || !get_name) {
        *error = "libibverbs.so.1 lacks ibv_get_device_list";
        return -1;
    }
    int n = 0;
    errno = 0;
    struct ibv_device **list = get_list(&n);
    if (!list) {
        *list_errno = errno;
        *error = "ibv_get_device_list failed";
        return -1;
    }
    for (int i = 0; i < n; i++) body(get_name(list[i]), context);
    free_list(list);
    return n;
}
#endif
