// libfabric for Swift. libfabric's own `static inline` API (fi_domain, fi_endpoint, fi_mr_reg,
// fi_read, fi_send, fi_recv, fi_cq_read, fi_cq_sread, fi_av_insert, fi_close, ...) imports as is;
// this header only adds what Swift cannot import: function-like macros and macro constants
// whose expansion is a cast.
#ifndef WEFT_CFABRIC_SHIM_H
#define WEFT_CFABRIC_SHIM_H

#include <stdint.h>
#include <rdma/fabric.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_eq.h>
#include <rdma/fi_rma.h>
#include <rdma/fi_errno.h>

/// FI_VERSION(FI_MAJOR_VERSION, FI_MINOR_VERSION): the API version of the headers we compiled against.
static inline uint32_t weft_fi_version(void) {
    return FI_VERSION(FI_MAJOR_VERSION, FI_MINOR_VERSION);
}

/// fi_allocinfo() is a macro around fi_dupinfo(NULL).
static inline struct fi_info *weft_fi_allocinfo(void) {
    return fi_allocinfo();
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
