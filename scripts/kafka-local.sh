#!/usr/bin/env bash
# A loopback single-node Kafka broker (KRaft, no ZooKeeper) for the Kafka example, tests and benchmark.
#
#   scripts/kafka-local.sh fetch                 # the broker's jars into the cache (Maven Central), once
#   scripts/kafka-local.sh start [--dir D]       # format + start on free loopback ports; prints host:port
#   scripts/kafka-local.sh env   [--dir D]       # `export KAFKA_BOOTSTRAP=host:port` of a running broker
#   scripts/kafka-local.sh stop  [--dir D]       # kill it and remove its data
#
# The jars come from Maven Central (org.apache.kafka:kafka_2.13 and kafka-tools, KAFKA_VERSION,
# default 4.1.1) with `mvn dependency:copy-dependencies` of a generated pom, into
# ${CROWN_CACHE:-~/.cache/crown}/kafka-VERSION/lib; a second fetch finds them and does nothing.
# Needs Java 17+ and Maven (Debian: default-jre-headless maven). Data, log, pid and the bootstrap
# address live under D (default .demo/kafka); the address is also written to D/bootstrap.
set -euo pipefail

version=${KAFKA_VERSION:-4.1.1}
cache=${CROWN_CACHE:-$HOME/.cache/crown}/kafka-$version
heap=${KAFKA_HEAP:-256m}

cmd=${1:-}
[ -n "$cmd" ] && shift
dir=.demo/kafka
while [ $# -gt 0 ]; do
    case "$1" in
        --dir) dir=${2:?--dir needs a directory}; shift 2 ;;
        *) echo "kafka-local: unknown argument $1" >&2; exit 2 ;;
    esac
done

usage() {
    echo "usage: $0 fetch | start [--dir D] | env [--dir D] | stop [--dir D]" >&2
    exit 2
}

install_hint="apt-get install -y --no-install-recommends default-jre-headless maven kcat (or: scripts/install-deps.sh --tests)"

# shellcheck source-path=SCRIPTDIR source=lib/ports.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/ports.sh"

fetch() {
    if [ -f "$cache/lib/.complete" ]; then
        return 0
    fi
    command -v java >/dev/null || { echo "kafka-local: java not found: $install_hint" >&2; exit 1; }
    command -v mvn >/dev/null || { echo "kafka-local: mvn not found: $install_hint" >&2; exit 1; }
    mkdir -p "$cache"
    local work
    work=$(mktemp -d "$cache/fetch.XXXXXX")
    cat >"$work/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>crown.local</groupId>
  <artifactId>kafka-broker-fetch</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$version</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$version</version></dependency>
    <!-- the broker logs through slf4j 1.7: without a binding it logs nothing (Kafka's tarball ships this) -->
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>2.24.3</version></dependency>
  </dependencies>
</project>
EOF
    echo "kafka-local: fetching Kafka $version with Maven into $cache (about 54 MB, once)" >&2
    if ! (cd "$work" && mvn -q -B dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$work/lib" >"$work/mvn.log" 2>&1); then
        echo "kafka-local: mvn failed; see $work/mvn.log" >&2
        exit 1
    fi
    touch "$work/lib/.complete"
    rm -rf "${cache:?}/lib"
    mv "$work/lib" "$cache/lib"
    rm -rf "$work"
}

stop() {
    local pid
    if [ -f "$dir/kafka.pid" ]; then
        pid=$(cat "$dir/kafka.pid")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 100); do
                kill -0 "$pid" 2>/dev/null || break
                # A zombie (its parent gone, not yet reaped) is dead for our purposes.
                [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ] && break
                sleep 0.1
            done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$dir/kafka.pid"
    fi
    rm -rf "$dir/data" "$dir/bootstrap"
}

start() {
    fetch
    local attempt
    # Another process may bind a port between our check and the broker's bind: try again.
    for attempt in 1 2 3; do
        if start_once; then
            return 0
        fi
        grep -q "Address already in use" "$dir/kafka.log" 2>/dev/null || exit 1
        echo "kafka-local: a port was taken meanwhile (attempt $attempt); retrying on others" >&2
    done
    exit 1
}

start_once() {
    stop
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    local ports broker controller
    read -r -a ports <<<"$(free_ports 2)"
    broker=${ports[0]}
    controller=${ports[1]}
    cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller
listeners=PLAINTEXT://127.0.0.1:$broker,CONTROLLER://127.0.0.1:$controller
advertised.listeners=PLAINTEXT://127.0.0.1:$broker
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
    cat >"$dir/log4j2.properties" <<EOF
rootLogger.level=INFO
rootLogger.appenderRef.stdout.ref=STDOUT
appender.stdout.type=Console
appender.stdout.name=STDOUT
appender.stdout.layout.type=PatternLayout
appender.stdout.layout.pattern=[%d] %p %m (%c)%n
EOF
    local java_opts=(-Xms"$heap" -Xmx"$heap" -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto
        -Djava.awt.headless=true -Dlog4j2.configurationFile="$dir/log4j2.properties")
    local cluster_id
    # What `StorageTool random-uuid` prints (16 random bytes, base64url), without starting a JVM.
    cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    if ! java -cp "$cache/lib/*" "${java_opts[@]}" kafka.tools.StorageTool format \
        -t "$cluster_id" -c "$dir/server.properties" >"$dir/format.log" 2>&1; then
        echo "kafka-local: formatting the storage failed; see $dir/format.log" >&2
        exit 1
    fi
    java -cp "$cache/lib/*" "${java_opts[@]}" kafka.Kafka "$dir/server.properties" >"$dir/kafka.log" 2>&1 &
    echo $! >"$dir/kafka.pid"
    for _ in $(seq 600); do
        if grep -q "Kafka Server started" "$dir/kafka.log" 2>/dev/null && ! port_free "$broker"; then
            echo "127.0.0.1:$broker" >"$dir/bootstrap"
            echo "127.0.0.1:$broker"
            return 0
        fi
        if ! kill -0 "$(cat "$dir/kafka.pid")" 2>/dev/null ||
            grep -q "Address already in use" "$dir/kafka.log" 2>/dev/null; then
            echo "kafka-local: the broker exited; see $dir/kafka.log" >&2
            stop_pid
            return 1
        fi
        sleep 0.1
    done
    echo "kafka-local: the broker did not start within 60 s; see $dir/kafka.log" >&2
    exit 1
}

stop_pid() {
    local pid
    pid=$(cat "$dir/kafka.pid" 2>/dev/null) || return 0
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/kafka.pid"
}

env_cmd() {
    [ -f "$dir/bootstrap" ] || { echo "kafka-local: no broker under $dir: run $0 start --dir $dir" >&2; exit 1; }
    echo "export KAFKA_BOOTSTRAP=$(cat "$dir/bootstrap")"
}

case "$cmd" in
    fetch) fetch ;;
    start) start ;;
    env) env_cmd ;;
    stop) stop ;;
    *) usage ;;
esac
