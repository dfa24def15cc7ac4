#include "sandbox/socket_filter.hpp"

#include <cerrno>
#include <cstddef>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/netlink.h>
#include <linux/seccomp.h>
#include <map>
#include <netinet/in.h>
#include <stdexcept>
#include <sys/socket.h>
#include <sys/stat.h>
#include <vector>

namespace keel::sandbox {

namespace {

// A few instructions with named jump targets, resolved when the program is put together.
class assembler {
public:
  void label(const std::string& name) { labels_[name] = code_.size(); }
  void load(std::uint32_t offset) { code_.push_back({BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offset), {}, {}}); }
  void and_mask(std::uint32_t mask) { code_.push_back({BPF_STMT(BPF_ALU | BPF_AND | BPF_K, mask), {}, {}}); }
  void ret(std::uint32_t action) { code_.push_back({BPF_STMT(BPF_RET | BPF_K, action), {}, {}}); }
  // Jumps to `target` when the accumulator equals `value` (or, with `set`, shares a bit).
  void jump_if(std::uint32_t value, const std::string& target, bool set = false) {
    code_.push_back({BPF_JUMP(BPF_JMP | (set ? BPF_JSET : BPF_JEQ) | BPF_K, value, 0, 0), target, {}});
  }
  void jump_if_at_least(std::uint32_t value, const std::string& target) {
    code_.push_back({BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, value, 0, 0), target, {}});
  }
  std::string bytes() const {
    std::vector<sock_filter> out;
    for (std::size_t i = 0; i < code_.size(); ++i) {
      sock_filter f = code_[i].instruction;
      if (!code_[i].target.empty()) {
        auto at = labels_.at(code_[i].target);
        if (at <= i || at - i - 1 > 255) throw std::logic_error("socket filter: a jump out of reach");
        f.jt = static_cast<unsigned char>(at - i - 1);
      }
      out.push_back(f);
    }
    return std::string(reinterpret_cast<const char*>(out.data()), out.size() * sizeof(sock_filter));
  }

private:
  struct line {
    sock_filter instruction;
    std::string target;
    std::string unused;
  };
  std::vector<line> code_;
  std::map<std::string, std::size_t> labels_;
};

constexpr std::uint32_t allow = SECCOMP_RET_ALLOW;
constexpr std::uint32_t refuse(int error_number) {
  return SECCOMP_RET_ERRNO | (static_cast<std::uint32_t>(error_number) & SECCOMP_RET_DATA);
}
constexpr std::uint32_t arg(int n) { return static_cast<std::uint32_t>(offsetof(seccomp_data, args) + 8 * n); }

// x86_64 numbers (the kernel's table; stable): socket, socketpair, fchmodat2; i386 socketcall,
// socket, socketpair.
constexpr std::uint32_t nr_socket = 41, nr_socketpair = 53, nr_fchmodat2 = 452, nr_setxattrat = 463;
constexpr std::uint32_t nr_i386_socketcall = 102, nr_i386_socket = 359, nr_i386_socketpair = 360;
constexpr std::uint32_t x32_bit = 0x40000000;

} // namespace

std::string socket_filter_program(bool network) {
  assembler a;
  a.load(offsetof(seccomp_data, arch));
  a.jump_if(AUDIT_ARCH_X86_64, "x86_64");
  a.load(offsetof(seccomp_data, nr));  // 32-bit: no sockets at all
  a.jump_if(nr_i386_socketcall, "no_family");
  a.jump_if(nr_i386_socket, "no_family");
  a.jump_if(nr_i386_socketpair, "no_family");
  a.ret(allow);
  a.label("x86_64");
  a.load(offsetof(seccomp_data, nr));
  a.jump_if_at_least(x32_bit, "no_call");
  a.jump_if(nr_socket, "socket");
  a.jump_if(nr_socketpair, "socketpair");
  a.jump_if(nr_fchmodat2, "fchmodat2");
  a.jump_if(nr_setxattrat, "no_xattr");
  a.ret(allow);

  a.label("socketpair");
  a.load(arg(0));
  a.jump_if(AF_UNIX, "allow");
  a.ret(refuse(EAFNOSUPPORT));

  a.label("socket");
  a.load(arg(0));
  a.jump_if(AF_UNIX, "allow");
  if (network) {
    a.jump_if(AF_INET, "ip");
    a.jump_if(AF_INET6, "ip");
    a.jump_if(AF_NETLINK, "netlink");
  }
  a.label("no_family");
  a.ret(refuse(EAFNOSUPPORT));

  if (network) {
    a.label("netlink");
    a.load(arg(2));
    a.jump_if(NETLINK_ROUTE, "allow");
    a.ret(refuse(EPROTONOSUPPORT));
    a.label("ip");
    a.load(arg(1));
    a.and_mask(~static_cast<std::uint32_t>(SOCK_NONBLOCK | SOCK_CLOEXEC));
    a.jump_if(SOCK_STREAM, "tcp");
    a.jump_if(SOCK_DGRAM, "udp");
    a.ret(refuse(EPROTONOSUPPORT));
    a.label("tcp");
    a.load(arg(2));
    a.jump_if(0, "allow");
    a.jump_if(IPPROTO_TCP, "allow");
    a.ret(refuse(EPROTONOSUPPORT));
    a.label("udp");
    a.load(arg(2));
    a.jump_if(0, "allow");
    a.jump_if(IPPROTO_UDP, "allow");
    a.ret(refuse(EPROTONOSUPPORT));
  }

  a.label("fchmodat2");  // no set-user-id or set-group-id bits, as for chmod and its kin
  a.load(arg(2));
  a.jump_if(S_ISUID | S_ISGID, "no_permission", true);
  a.ret(allow);
  a.label("no_permission");
  a.ret(refuse(EPERM));
  a.label("no_xattr");  // as setxattr and its kin in the main program
  a.ret(refuse(EOPNOTSUPP));
  a.label("no_call");
  a.ret(refuse(ENOSYS));
  a.label("allow");
  a.ret(allow);
  return a.bytes();
}

} // namespace keel::sandbox
