#!/usr/bin/env bash
# Stand-in for ZooKeeper's bin/zkServer.sh (with zkEnv.sh) in the stand-in zookeeper image: the
# one action the chart uses, start-foreground, with the official distribution's variables
# (ZOOCFGDIR, ZOOCFG, ZOO_LOG_DIR, JVMFLAGS) and class path (the config folder, then lib/*).
# The official script is not in any archive these machines can fetch (see README.md here).
set -euo pipefail
ZOOBINDIR=$(cd "$(dirname "$0")" && pwd)
ZOOKEEPER_PREFIX=$(dirname "$ZOOBINDIR")
ZOOCFGDIR=${ZOOCFGDIR:-$ZOOKEEPER_PREFIX/conf}
ZOOCFG=$ZOOCFGDIR/${ZOOCFG:-zoo.cfg}
ZOO_LOG_DIR=${ZOO_LOG_DIR:-$ZOOKEEPER_PREFIX/logs}
case "${1:-}" in
  start-foreground) ;;
  *)
    echo "zkServer.sh (stand-in image): only start-foreground is provided, not '${1:-}'" >&2
    exit 2
    ;;
esac
# shellcheck disable=SC2086 # JVMFLAGS holds several flags, as in the official script.
exec java "-Dzookeeper.log.dir=$ZOO_LOG_DIR" \
  "-Dzookeeper.log.file=zookeeper-${USER:-}-server-${HOSTNAME:-}.log" \
  -Dlog4j2.level=INFO \
  -XX:+HeapDumpOnOutOfMemoryError -XX:OnOutOfMemoryError='kill -9 %p' \
  -cp "$ZOOCFGDIR:$ZOOKEEPER_PREFIX/lib/*" ${JVMFLAGS:-} \
  org.apache.zookeeper.server.quorum.QuorumPeerMain "$ZOOCFG"
