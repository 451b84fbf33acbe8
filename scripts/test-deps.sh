#!/usr/bin/env bash
# Installs what the test suite needs when it is missing: protoc is not needed
# (generated code is committed); the MQTT and CoAP (libcoap) command-line clients, Chromium for
# the dashboard browser test, iproute2 and nftables for the network
# namespaces of the Jepsen test, and staticcheck. Safe to run repeatedly.
set -euo pipefail
need=()
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v curl >/dev/null 2>&1 || need+=(curl)
# OpenSSH: the README's SSH-through-a-stream walkthrough (TestReadmeStreamSSH).
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v coap-client-openssl >/dev/null 2>&1 || need+=(libcoap3-bin)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v nft >/dev/null 2>&1 || need+=(nftables)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
