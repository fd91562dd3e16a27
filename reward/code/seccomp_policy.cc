#include "reward/code/seccomp_policy.h"

#include <fcntl.h>
#include <linux/sched.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>

#include "core/check.h"

#ifndef F_OFD_SETLK
#define F_OFD_SETLK 37
#define F_OFD_SETLKW 38
#endif

namespace lightrl::reward::code {
namespace {

struct CtxDeleter {
  void operator()(void* ctx) const { seccomp_release(ctx); }
};

Status Check(int rc, const std::string& what) {
  if (rc < 0) return Internal(StrCat("libseccomp: ", what, ": ", std::strerror(-rc)));
  return Status::Ok();
}

// Resolves a syscall by name; names unknown to this libseccomp/arch are skipped (returning
// true) so the filter builds on older libraries, but known ones must be added.
Status Deny(scmp_filter_ctx ctx, const char* name, int err = EPERM) {
  int nr = seccomp_syscall_resolve_name(name);
  if (nr == __NR_SCMP_ERROR) return Status::Ok();
  return Check(seccomp_rule_add(ctx, SCMP_ACT_ERRNO(err), nr, 0), StrCat("deny ", name));
}

}  // namespace

StatusOr<std::vector<uint8_t>> BuildSeccompBpf(const SeccompOptions& options) {
  std::unique_ptr<void, CtxDeleter> holder(seccomp_init(SCMP_ACT_ALLOW));
  scmp_filter_ctx ctx = holder.get();
  if (!ctx) return Internal("libseccomp: seccomp_init failed");
  // Foreign-architecture syscalls (int 0x80 i386, x32) bypass a native-only filter: kill.
  LR_RETURN_IF_ERROR(Check(seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS),
                           "bad-arch action"));

  for (const char* name :
       {"ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "perf_event_open", "bpf",
        "userfaultfd", "mount", "umount2", "pivot_root", "chroot", "fsopen", "fsmount",
        "move_mount", "open_tree", "fspick", "fsconfig", "mount_setattr", "unshare", "setns",
        "keyctl", "add_key", "request_key", "io_uring_setup", "io_uring_enter",
        "io_uring_register", "kexec_load", "kexec_file_load", "init_module", "finit_module",
        "delete_module", "swapon", "swapoff", "reboot", "acct", "quotactl", "open_by_handle_at",
        "name_to_handle_at", "lookup_dcookie", "fanotify_init", "syslog", "vhangup"}) {
    LR_RETURN_IF_ERROR(Deny(ctx, name));
  }
  // clone3 passes its flags in memory that seccomp cannot read: ENOSYS makes glibc fall back
  // to clone(2), whose flags are checked below.
  LR_RETURN_IF_ERROR(Deny(ctx, "clone3", ENOSYS));
  const uint64_t ns_flags[] = {CLONE_NEWUSER, CLONE_NEWNS,  CLONE_NEWPID,   CLONE_NEWNET,
                               CLONE_NEWIPC,  CLONE_NEWUTS, CLONE_NEWCGROUP};
  for (uint64_t flag : ns_flags) {
    LR_RETURN_IF_ERROR(Check(seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                                              SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag)),
                             "clone namespace flags"));
  }
  // Sockets: AF_UNIX only.
  LR_RETURN_IF_ERROR(Check(seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(socket), 1,
                                            SCMP_A0(SCMP_CMP_NE, AF_UNIX)),
                           "socket family"));
  LR_RETURN_IF_ERROR(Check(seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(socketpair), 1,
                                            SCMP_A0(SCMP_CMP_NE, AF_UNIX)),
                           "socketpair family"));
  // Terminal injection.
  for (uint64_t req : {static_cast<uint64_t>(TIOCSTI), static_cast<uint64_t>(TIOCLINUX)}) {
    LR_RETURN_IF_ERROR(Check(seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
                                              SCMP_A1(SCMP_CMP_MASKED_EQ, 0xFFFFFFFFu, req)),
                             "ioctl TIOCSTI/TIOCLINUX"));
  }
  if (options.deny_locks) {
    LR_RETURN_IF_ERROR(Deny(ctx, "flock"));
    for (uint64_t cmd : {static_cast<uint64_t>(F_SETLK), static_cast<uint64_t>(F_SETLKW),
                         static_cast<uint64_t>(F_OFD_SETLK), static_cast<uint64_t>(F_OFD_SETLKW)}) {
      LR_RETURN_IF_ERROR(Check(seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(fcntl), 1,
                                                SCMP_A1(SCMP_CMP_MASKED_EQ, 0xFFFFFFFFu, cmd)),
                               "fcntl locks"));
    }
  }

  // Export through a memfd and read the bytes back.
  int fd = ::memfd_create("lightrl-seccomp", MFD_CLOEXEC);
  if (fd < 0) return Internal(StrCat("memfd_create: ", std::strerror(errno)));
  Status st = Check(seccomp_export_bpf(ctx, fd), "export bpf");
  std::vector<uint8_t> bytes;
  if (st.ok()) {
    off_t size = ::lseek(fd, 0, SEEK_END);
    bytes.resize(static_cast<size_t>(size > 0 ? size : 0));
    if (size <= 0 || ::pread(fd, bytes.data(), bytes.size(), 0) != size) {
      st = Internal("reading the exported seccomp program back failed");
    }
  }
  ::close(fd);
  LR_RETURN_IF_ERROR(st);
  return bytes;
}

}  // namespace lightrl::reward::code
