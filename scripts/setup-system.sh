#!/usr/bin/env bash
# System packages some features and tests need, installed when missing (needs root and apt):
#   openssh-server     a real SSH server for the deploy/bench tests (edgepack deploy uses the ssh client)
#   qemu-user-static   `edgepack verify --emulate aarch64`
#   arm64 apt lists    so apt can download Debian's arm64 Python for the emulated environment
# Idempotent; without root it says what is missing and carries on.
set -euo pipefail
missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
command -v ssh >/dev/null || missing+=(openssh-client)
need_arm64=0
dpkg --print-foreign-architectures 2>/dev/null | grep -qx arm64 || need_arm64=1
if [ ${#missing[@]} -eq 0 ] && [ $need_arm64 -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "note: not root or no apt: install ${missing[*]:-nothing} and run 'dpkg --add-architecture arm64 && apt-get update'" \
       "yourself for the SSH and emulation features and their tests" >&2
  exit 0
fi
[ $need_arm64 -eq 1 ] && dpkg --add-architecture arm64
apt-get update -qq
[ ${#missing[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
