// libibverbs, only for RDMA device detection (ibv_get_device_list / ibv_get_device_name).
#ifndef WEFT_CVERBS_SHIM_H
#define WEFT_CVERBS_SHIM_H
#include <infiniband/verbs.h>
#endif
