// The seccomp filter applied to sandboxed programs (rewards.md §4.1), built with libseccomp and
// exported as a classic-BPF program (seccomp_export_bpf) that bubblewrap loads with
// `--seccomp FD` right before it execs the program, so it covers the program and every
// descendant and cannot be removed.
//
// Policy: allow by default, deny (EPERM unless noted) what a test program never needs and what
// opens a way out or a channel between sandboxes:
//   - ptrace, process_vm_readv/writev, kcmp, perf_event_open, bpf, userfaultfd;
//   - mount/umount2/pivot_root/chroot and the new mount API (fsopen, fsmount, move_mount,
//     open_tree, fspick, fsconfig, mount_setattr); unshare, setns, clone/clone3 with namespace
//     flags (clone3 gets ENOSYS so libc falls back to clone, whose flags can be inspected);
//   - keyctl, add_key, request_key (kernel keyrings are shared across sandboxes of one uid);
//   - io_uring_setup/enter/register; TIOCSTI/TIOCLINUX ioctls (CVE-2017-5226);
//   - socket()/socketpair() for every family except AF_UNIX (no AF_INET/AF_INET6, AF_NETLINK,
//     AF_PACKET, AF_VSOCK, ...). AF_UNIX stays allowed: Python's multiprocessing and
//     subprocess use socketpair/pipes, and a fresh network namespace has nothing to reach;
//   - flock and fcntl record locks (F_SETLK, F_SETLKW, F_OFD_SETLK, F_OFD_SETLKW) on the shared
//     read-only toolchain would be a cross-sandbox channel (isolate flag 4);
//   - syscalls of foreign architectures (i386/x32 entry points) kill the process.
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"

namespace lightrl::reward::code {

struct SeccompOptions {
  bool deny_locks = true;  // flock / fcntl locks (see above)
};

// The exported BPF program (struct sock_filter[] bytes), ready to be written to the fd passed
// with `bwrap --seccomp`. Errors come from libseccomp (Internal, with the failing rule).
StatusOr<std::vector<uint8_t>> BuildSeccompBpf(const SeccompOptions& options = {});

}  // namespace lightrl::reward::code
