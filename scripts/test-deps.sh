#!/usr/bin/env bash
# Installs what the test suite needs when it is missing: protoc is not needed
# (generated code is committed); the MQTT and CoAP (libcoap) command-line clients, RabbitMQ
# (AMQP 1.0), Chromium for
# the dashboard browser test, iproute2 and nftables for the network
# namespaces of the Jepsen test, staticcheck, and npm with the Azure IoT device
# SDK for Node.js. Safe to run repeatedly.
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
command -v npm >/dev/null 2>&1 || need+=(npm)
# RabbitMQ with its AMQP 1.0 plugin: the broker of the AMQP route and ingress
# tests (internal/testutil/rabbitmq.go starts it on loopback in a temp folder).
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need+=(rabbitmq-server)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The Azure IoT device SDK for Node.js (pinned in package-lock.json), for
# TestModelsThroughTheBinary.
pnp="$(cd "$(dirname "$0")/.." && pwd)/api/node/testdata/pnp-device"
if [ ! -d "$pnp/node_modules/azure-iot-device-mqtt" ]; then
  echo "installing the Azure IoT device SDK into $pnp"
  (cd "$pnp" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

# The Azure IoT service SDK for Node.js, for the IoT Hub service API test
# (api/node TestFleetOperations), kept out of the tree in .cache/npm.
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -d "$root/.cache/npm/node_modules/azure-iothub" ]; then
  echo "installing: npm azure-iothub@1.16.6"
  npm install --prefix "$root/.cache/npm" --no-audit --no-fund --silent azure-iothub@1.16.6 >/dev/null
fi
