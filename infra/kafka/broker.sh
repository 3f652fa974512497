#!/usr/bin/env bash
# Local single-node KRaft Kafka broker: fetch | start | wait | stop | status.
#   broker.sh fetch                          download the broker jars with Maven (idempotent)
#   broker.sh start DATA_DIR PORT CPORT      format DATA_DIR on first use, start in the background
#                                            (records CPORT in DATA_DIR/controller.port)
#   broker.sh wait  PORT [SECONDS]           wait until the broker accepts connections
#   broker.sh stop  DATA_DIR                 stop the broker started on DATA_DIR
#   broker.sh status DATA_DIR                exit 0 when it runs, print its pid
# Java 17+ is the only prerequisite.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
libs="$here/target/libs"

die() { echo "kafka: $*" >&2; exit 1; }

need_java() {
  command -v java >/dev/null 2>&1 || die "Java 17 or newer is required (install openjdk-17-jre-headless); 'java' is not on PATH"
  local v
  v=$(java -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $2}')
  [ "${v%%.*}" -ge 17 ] 2>/dev/null || die "Java 17 or newer is required; found java.specification.version=$v"
}

fetch() {
  if [ -f "$libs/.complete" ]; then return 0; fi
  command -v mvn >/dev/null 2>&1 || die "Maven (mvn) is needed once to fetch the broker jars from Maven Central"
  mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies >&2 || die "fetching the Kafka jars with Maven failed"
  touch "$libs/.complete"
}

classpath() { printf '%s' "$libs/*"; }

run_java() {  # run_java DATA_DIR MAINCLASS ARGS...
  local dir=$1; shift
  java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$here/log4j2.yaml" -Dkafka.logs.dir="$dir" \
    -cp "$(classpath)" "$@"
}

start() {
  local dir=$1 port=$2 cport=$3
  need_java; fetch
  mkdir -p "$dir"
  if status "$dir" >/dev/null 2>&1; then echo "kafka: already running on $dir" >&2; return 0; fi
  sed -e "s#@DATA_DIR@#$dir#g" -e "s#@PORT@#$port#g" -e "s#@CONTROLLER_PORT@#$cport#g" \
    "$here/server.properties.template" > "$dir/server.properties"
  if [ ! -f "$dir/logs/meta.properties" ]; then
    run_java "$dir" kafka.tools.StorageTool format -t "$(cat "$dir/cluster.id" 2>/dev/null || uuid_gen "$dir")" \
      -c "$dir/server.properties" --ignore-formatted >"$dir/format.log" 2>&1 || { cat "$dir/format.log" >&2; die "formatting $dir failed"; }
  fi
  nohup java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$here/log4j2.yaml" -Dkafka.logs.dir="$dir" \
    -cp "$(classpath)" kafka.Kafka "$dir/server.properties" >"$dir/stdout.log" 2>&1 &
  echo $! > "$dir/broker.pid"
  echo "$port" > "$dir/broker.port"
  echo "$cport" > "$dir/controller.port"
}

uuid_gen() {
  local id
  id=$(run_java "$1" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
  echo "$id" > "$1/cluster.id"
  echo "$id"
}

wait_ready() {
  local port=$1 secs=${2:-60} i=0
  while [ "$i" -lt $((secs * 5)) ]; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.2; i=$((i + 1))
  done
  die "broker on port $port not ready after ${secs}s"
}

status() {
  local dir=$1 pid
  [ -f "$dir/broker.pid" ] || return 1
  pid=$(cat "$dir/broker.pid")
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

stop() {
  local dir=$1 pid i=0
  pid=$(status "$dir") || { rm -f "$dir/broker.pid"; return 0; }
  kill "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 150 ]; do sleep 0.2; i=$((i + 1)); done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$dir/broker.pid"
}

cmd=${1:-}; shift || true
case "$cmd" in
  fetch) fetch ;;
  start) [ $# -eq 3 ] || die "usage: broker.sh start DATA_DIR PORT CONTROLLER_PORT"; start "$@" ;;
  wait) [ $# -ge 1 ] || die "usage: broker.sh wait PORT [SECONDS]"; wait_ready "$@" ;;
  stop) [ $# -eq 1 ] || die "usage: broker.sh stop DATA_DIR"; stop "$@" ;;
  status) [ $# -eq 1 ] || die "usage: broker.sh status DATA_DIR"; status "$@" ;;
  *) die "usage: broker.sh fetch|start|wait|stop|status" ;;
esac
