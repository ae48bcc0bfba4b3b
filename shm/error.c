/*
 * error.c - names of the GW_E* codes.
 */
#include "shm/shm.h"

const char *
gw_strerror(int err)
{
    switch (err) {
    case GW_OK: return "success";
    case GW_ENOMEM: return "out of memory";
    case GW_EIO: return "input/output error";
    case GW_EINVAL: return "invalid argument";
    case GW_ENOENT: return "not found";
    case GW_EEXIST: return "already exists";
    case GW_ETIMEDOUT: return "timed out";
    case GW_ETOOBIG: return "too large";
    case GW_EPROTO: return "protocol error";
    case GW_EPERM: return "permission denied";
    case GW_ECLOSED: return "connection closed";
    case GW_ECONFIG: return "invalid configuration";
    case GW_ESTORE: return "state store error";
    case GW_EUPSTREAM: return "upstream attempt failed";
    case GW_ENOSPC: return "no space left in the state store";
    }
    return "unknown error";
}
