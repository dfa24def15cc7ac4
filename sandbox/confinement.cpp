#include "sandbox/confinement.hpp"
#include "sandbox/socket_filter.hpp"

#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/landlock.h>
#include <linux/seccomp.h>
#include <linux/securebits.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace keel::sandbox {

namespace {

// Landlock rights newer than the headers Debian 12 ships (the kernel tells which it has).
constexpr std::uint64_t access_fs_refer = 1ULL << 13;     // ABI 2
constexpr std::uint64_t access_fs_truncate = 1ULL << 14;  // ABI 3
constexpr std::uint64_t access_fs_ioctl_dev = 1ULL << 15; // ABI 5
constexpr std::uint64_t access_net_bind_tcp = 1ULL << 0;  // ABI 4
constexpr std::uint64_t access_net_connect_tcp = 1ULL << 1;
constexpr std::uint64_t scope_abstract_unix_socket = 1ULL << 0;  // ABI 6
constexpr std::uint64_t scope_signal = 1ULL << 1;

struct ruleset_attr {
  std::uint64_t handled_access_fs;
  std::uint64_t handled_access_net;
  std::uint64_t scoped;
};

std::uint64_t write_rights(int abi) {
  std::uint64_t rights = LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_REMOVE_DIR |
                         LANDLOCK_ACCESS_FS_REMOVE_FILE | LANDLOCK_ACCESS_FS_MAKE_CHAR |
                         LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG |
                         LANDLOCK_ACCESS_FS_MAKE_SOCK | LANDLOCK_ACCESS_FS_MAKE_FIFO |
                         LANDLOCK_ACCESS_FS_MAKE_BLOCK | LANDLOCK_ACCESS_FS_MAKE_SYM;
  if (abi >= 2) rights |= access_fs_refer;
  if (abi >= 3) rights |= access_fs_truncate;
  if (abi >= 5) rights |= access_fs_ioctl_dev;
  return rights;
}

// Rights that apply to a file (not a directory) in a rule.
std::uint64_t file_rights(int abi) {
  std::uint64_t rights = LANDLOCK_ACCESS_FS_WRITE_FILE;
  if (abi >= 3) rights |= access_fs_truncate;
  if (abi >= 5) rights |= access_fs_ioctl_dev;
  return rights;
}

result<std::string> build_seccomp() {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (!ctx) return make_error(errc::internal, "seccomp_init failed");
  struct releaser {
    scmp_filter_ctx c;
    ~releaser() { seccomp_release(c); }
  } releasing{ctx};
  seccomp_arch_add(ctx, SCMP_ARCH_X86);  // 32-bit calls meet the same rules (where it applies)
  seccomp_arch_add(ctx, SCMP_ARCH_X32);
  const uint32_t deny = SCMP_ACT_ERRNO(EPERM);
  const char* refused[] = {
    "mount", "umount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr", "ptrace", "process_vm_readv",
    "process_vm_writev", "keyctl", "add_key", "request_key", "bpf", "unshare", "setns",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot",
    "swapon", "swapoff", "perf_event_open", "userfaultfd", "open_by_handle_at",
    "name_to_handle_at", "iopl", "ioperm", "syslog", "acct", "quotactl", "lookup_dcookie",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "sethostname", "setdomainname",
    "vhangup", "nfsservctl", "uselib", "fanotify_init",
    // Calls that act on another process's descriptors or memory, or do system calls the filter
    // never sees (io_uring runs socket, open and the rest from a ring).
    "pidfd_getfd", "kcmp", "process_madvise", "io_uring_setup", "io_uring_enter", "io_uring_register"};
  // Extended attributes take disk space that no write counts: refused as a file system without
  // them refuses (EOPNOTSUPP); setxattrat is in the socket filter.
  for (const char* name : {"setxattr", "lsetxattr", "fsetxattr"})
    if (seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EOPNOTSUPP), seccomp_syscall_resolve_name(name), 0) != 0)
      return make_error(errc::internal, std::string("seccomp: cannot refuse ") + name);
  for (const char* name : refused) {
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) continue;  // not on this architecture
    if (seccomp_rule_add(ctx, deny, nr, 0) != 0)
      return make_error(errc::internal, std::string("seccomp: cannot refuse ") + name);
  }
  // New namespaces through clone, each flag on its own; clone3 passes its flags in memory a
  // filter cannot read, so it answers ENOSYS and the C library falls back to clone.
  for (std::uint64_t flag : {CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET,
                             CLONE_NEWCGROUP, CLONE_NEWTIME})
    if (seccomp_rule_add(ctx, deny, SCMP_SYS(clone), 1, SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag)) != 0)
      return make_error(errc::internal, "seccomp: cannot refuse new namespaces");
  if (seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0) != 0)
    return make_error(errc::internal, "seccomp: cannot refuse clone3");
  // Limits of another process: only the caller's own (pid 0).
  if (seccomp_rule_add(ctx, deny, SCMP_SYS(prlimit64), 1, SCMP_A0(SCMP_CMP_NE, 0)) != 0)
    return make_error(errc::internal, "seccomp: cannot bound prlimit");
  // Space taken without writing: no fallocate at all (EOPNOTSUPP, as a file system without it
  // answers; the C library's posix_fallocate then writes the blocks, which are counted).
  if (seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EOPNOTSUPP), SCMP_SYS(fallocate), 0) != 0)
    return make_error(errc::internal, "seccomp: cannot refuse fallocate");
  // No set-user-id or set-group-id file, made so or changed so: the mode argument of every call
  // that takes one (fchmodat2 is in the socket filter; openat2 passes its mode in memory a filter
  // cannot read, so it answers ENOSYS and the C library uses openat).
  struct mode_argument {
    int syscall;
    unsigned index;
  };
  const mode_argument with_mode[] = {{SCMP_SYS(chmod), 1},  {SCMP_SYS(fchmod), 1}, {SCMP_SYS(fchmodat), 2},
                                     {SCMP_SYS(open), 2},   {SCMP_SYS(openat), 3}, {SCMP_SYS(creat), 1},
                                     {SCMP_SYS(mknod), 1},  {SCMP_SYS(mknodat), 2}, {SCMP_SYS(mkdir), 1},
                                     {SCMP_SYS(mkdirat), 2}};
  for (std::uint64_t bit : {static_cast<std::uint64_t>(S_ISUID), static_cast<std::uint64_t>(S_ISGID)})
    for (const auto& call : with_mode)
      if (seccomp_rule_add(ctx, deny, call.syscall, 1, scmp_arg_cmp{call.index, SCMP_CMP_MASKED_EQ, bit, bit}) != 0)
        return make_error(errc::internal, "seccomp: cannot refuse set-id bits");
  if (seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(openat2), 0) != 0)
    return make_error(errc::internal, "seccomp: cannot refuse openat2");
  // Typing into the terminal of whoever started keel.
  for (unsigned long request : {static_cast<unsigned long>(TIOCSTI), static_cast<unsigned long>(TIOCLINUX)})
    if (seccomp_rule_add(ctx, deny, SCMP_SYS(ioctl), 1, SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffULL, request)) != 0)
      return make_error(errc::internal, "seccomp: cannot refuse terminal injection");
  int memory = ::memfd_create("keel-seccomp", MFD_CLOEXEC);
  if (memory < 0) return make_error(errc::io, std::string("memfd_create: ") + std::strerror(errno));
  unique_fd holder(memory);
  if (seccomp_export_bpf(ctx, memory) != 0) return make_error(errc::internal, "seccomp: cannot export the filter");
  auto size = ::lseek(memory, 0, SEEK_END);
  std::string program(static_cast<std::size_t>(size), '\0');
  if (::pread(memory, program.data(), program.size(), 0) != size)
    return make_error(errc::io, "seccomp: cannot read the exported filter");
  return program;
}

} // namespace

int landlock_abi() {
  static const int abi = [] {
    long v = ::syscall(SYS_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION);
    return v < 0 ? 0 : static_cast<int>(v);
  }();
  return abi;
}

result<const std::string*> seccomp_program(bool network) {
  (void)network;  // the main program is the same either way; sockets are the other program's
  static const result<std::string> program = build_seccomp();
  if (!program) return program.error();
  return &*program;
}

namespace {
const std::string& socket_program(bool network) {
  static const std::string programs[2] = {socket_filter_program(false), socket_filter_program(true)};
  return programs[network ? 1 : 0];
}

result<unique_fd> program_fd(const std::string& bytes) { return memory_file("keel-seccomp", bytes); }
} // namespace

result<unique_fd> memory_file(const char* name, const std::string& bytes) {
  unique_fd fd(::memfd_create(name, MFD_CLOEXEC));
  if (!fd.valid()) return make_error(errc::io, std::string("memfd_create: ") + std::strerror(errno));
  if (::write(fd.get(), bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size()) ||
      ::lseek(fd.get(), 0, SEEK_SET) != 0)
    return make_error(errc::io, std::string("cannot write the memory file ") + name);
  return fd;
}

result<std::vector<unique_fd>> seccomp_program_fds(bool network) {
  auto program = seccomp_program(network);
  if (!program) return program.error();
  std::vector<unique_fd> fds;
  for (const std::string* bytes : {*program, &socket_program(network)}) {
    auto fd = program_fd(*bytes);
    if (!fd) return fd.error();
    fds.push_back(std::move(*fd));
  }
  return fds;
}

result<local_confinement> local_confinement::make(const std::vector<int>& writable, bool network,
                                                 std::string writable_in_child) {
  local_confinement out;
  auto program = seccomp_program(network);
  if (!program) return program.error();
  out.seccomp_ = *program;
  out.socket_seccomp_ = &socket_program(network);
  int abi = landlock_abi();
  if (abi < 1) {
    out.landlock_status_ = "Landlock is not available in this kernel: writes are not confined";
    return out;
  }
  ruleset_attr attr{write_rights(abi), 0, 0};
  std::size_t attr_size = sizeof(std::uint64_t);
  if (abi >= 4) {
    if (!network) attr.handled_access_net = access_net_bind_tcp | access_net_connect_tcp;
    attr_size = 2 * sizeof(std::uint64_t);
  }
  if (abi >= 6) {
    attr.scoped = scope_signal | scope_abstract_unix_socket;
    attr_size = sizeof attr;
  }
  long ruleset = ::syscall(SYS_landlock_create_ruleset, &attr, attr_size, 0);
  if (ruleset < 0) return make_error(errc::io, std::string("landlock_create_ruleset: ") + std::strerror(errno));
  out.ruleset_ = unique_fd(static_cast<int>(ruleset));
  auto allow = [&](int fd, std::uint64_t rights) -> result<void> {
    landlock_path_beneath_attr rule{rights, fd};
    if (::syscall(SYS_landlock_add_rule, out.ruleset_.get(), LANDLOCK_RULE_PATH_BENEATH, &rule, 0) != 0)
      return make_error(errc::io, std::string("landlock_add_rule: ") + std::strerror(errno));
    return success();
  };
  for (int fd : writable)
    if (auto added = allow(fd, write_rights(abi)); !added) return added.error();
  // The devices every program writes to.
  for (const char* device : {"/dev/null", "/dev/zero", "/dev/full", "/dev/tty"}) {
    unique_fd fd(::open(device, O_PATH | O_CLOEXEC));
    if (fd.valid())
      if (auto added = allow(fd.get(), file_rights(abi)); !added) return added.error();
  }
  out.landlock_status_ = "landlock ABI " + std::to_string(abi);
  out.writable_in_child_ = std::move(writable_in_child);
  out.write_rights_ = write_rights(abi);
  return out;
}

int local_confinement::apply_in_child(const identity& run_as, const char** failed_step) const noexcept {
  auto failed = [&](const char* step) {
    *failed_step = step;
    return errno;
  };
  // No capabilities, now or after exec: emptied while this process may still do it (as root).
  for (int cap = 0; cap <= 63; ++cap)
    if (::syscall(SYS_prctl, PR_CAPBSET_READ, cap, 0, 0, 0) > 0 && ::syscall(SYS_prctl, PR_CAPBSET_DROP, cap, 0, 0, 0) != 0)
      return failed("capability bounding set");
  ::syscall(SYS_prctl, PR_SET_SECUREBITS, SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP |
                               SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_KEEP_CAPS_LOCKED, 0, 0, 0);
  ::syscall(SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
  if (int failed_identity = become(run_as, failed_step)) return failed_identity;
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (::syscall(SYS_capset, &header, data) != 0) return failed("capset");
  if (::syscall(SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return failed("no_new_privs");
  if (ruleset_.valid() && !writable_in_child_.empty()) {
    int fd = static_cast<int>(::syscall(SYS_openat, AT_FDCWD, writable_in_child_.c_str(),
                                        O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (fd < 0) return failed("opening its temporary directory");
    landlock_path_beneath_attr rule{write_rights_, fd};
    long added = ::syscall(SYS_landlock_add_rule, ruleset_.get(), LANDLOCK_RULE_PATH_BENEATH, &rule, 0);
    ::syscall(SYS_close, fd);
    if (added != 0) return failed("allowing writes to its temporary directory");
  }
  if (ruleset_.valid() && ::syscall(SYS_landlock_restrict_self, ruleset_.get(), 0) != 0)
    return failed("landlock_restrict_self");
  for (const std::string* bytes : {seccomp_, socket_seccomp_}) {
    if (!bytes) continue;
    sock_fprog program{static_cast<unsigned short>(bytes->size() / sizeof(sock_filter)),
                       reinterpret_cast<sock_filter*>(const_cast<char*>(bytes->data()))};
    if (::syscall(SYS_prctl, PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program, 0, 0) != 0) return failed("seccomp");
  }
  return 0;
}

} // namespace keel::sandbox
