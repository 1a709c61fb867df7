# shellcheck shell=bash
# Sourced by scripts/etcd-local.sh and scripts/kafka-local.sh: free loopback ports.

port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# `free_ports N`: N free loopback ports, from a random start below the kernel's ephemeral range
# (32768-60999 by default): a port that an outgoing connection uses as its local port answers
# no connect() yet cannot be bound.
free_ports() {
    local want=$1 p found=()
    p=$(( 20000 + RANDOM % 12000 ))
    while [ "${#found[@]}" -lt "$want" ]; do
        if port_free "$p"; then
            found+=("$p")
        fi
        p=$(( p + 1 ))
    done
    echo "${found[@]}"
}
