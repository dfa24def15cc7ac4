// The second seccomp program a command runs under: which sockets it may make, by family, type
// and protocol (default deny), plus the calls libseccomp cannot express here (fchmodat2's mode).
// Written as plain BPF because the policy compares one argument with several values.
#pragma once

#include <string>

namespace keel::sandbox {

// Without network: AF_UNIX only. With it: also AF_INET and AF_INET6 as TCP (stream, protocol 0
// or 6) or UDP (datagram, protocol 0 or 17), and AF_NETLINK for routing (protocol 0, which name
// resolution reads addresses through). Anything else gets EAFNOSUPPORT or EPROTONOSUPPORT.
// 32-bit programs get no sockets at all; x32 system calls are refused. The bytes are a
// `sock_filter` array.
std::string socket_filter_program(bool network);

} // namespace keel::sandbox
