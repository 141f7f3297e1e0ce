# Helpers shared by scripts/chaos.sh and scripts/soak.sh (sourced, from the repository root).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # $1 file, $2 pattern
  for _ in $(seq 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "timed out waiting for $2 in $1" >&2; cat "$1" >&2; exit 1
}
wait_port() { # $1 port
  for _ in $(seq 100); do (exec 5<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listens on port $1" >&2; exit 1
}
field() { sed -n "s/^$2: //p" "$1"; } # $1 file, $2 key: the value of its `key: value` line
