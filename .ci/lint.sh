#!/usr/bin/env bash
# House guards that the compiler cannot check (see shared/design/CONVENTIONS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0

# The coordinator and the wire format are sans-IO: no clock, sockets, threads or transports.
hits=$(grep -rnE 'Instant::now|SystemTime|std::net|std::thread|tokio|hora_transport|hora_tcp' \
    core/src/coordinator core/src/wire --include=*.rs | grep -v '/tests/' || true)
if [ -n "$hits" ]; then
    echo "lint: the coordinator must stay sans-IO (time is passed in, no IO):" >&2
    echo "$hits" >&2
    fail=1
fi

# Concrete backends are named only in core/src/backend/ (selection and wiring) and in their
# own crates; everything else goes through hora_transport's traits. Tests may name what they
# test; horovodrun may use hora_mpi's launcher helpers (finding mpirun, reading its variables).
backends='hora_tcp|hora_shm|hora_mpi|TcpTransport|TcpConfig|ShmTransport|ShmGroup|ShmConfig|MpiTransport|MpiCollectives'
hits=$(grep -rnE "\b($backends)\b" core/src framework-bindings/*/src benches/src horovodrun/src --include=*.rs \
    | grep -v '^core/src/backend/' | grep -vE '/tests?(/|\.rs:)' | grep -vE '^[^:]+:[0-9]+:\s*//' \
    | grep -vE '^horovodrun/src/[^:]*:[0-9]+:.*hora_mpi::(mpirun|env)\b' || true)
if [ -n "$hits" ]; then
    echo "lint: a concrete backend is named outside core/src/backend/ (go through the backend module):" >&2
    echo "$hits" >&2
    fail=1
fi

# No source file outside tests grows past 800 lines (split it by concern).
long=$(find core transports horovodrun framework-bindings benches examples tests -name '*.rs' -not -path '*/target/*' \
    | grep -vE '/tests?(/|\.rs$)' | xargs wc -l | awk '$2 != "total" && $1 > 800 { print $2 ": " $1 " lines" }' || true)
if [ -n "$long" ]; then
    echo "lint: files over 800 lines:" >&2
    echo "$long" >&2
    fail=1
fi

# Every unsafe block says why it is sound.
for f in $(grep -rlE 'unsafe \{|unsafe fn|unsafe impl' --include=*.rs transports core horovodrun benches tests examples 2>/dev/null || true); do
    missing=$(awk '/unsafe (\{|fn|impl)/ && prev !~ /SAFETY/ && $0 !~ /SAFETY/ { print FILENAME ":" NR ": " $0 } { if ($0 !~ /^[[:space:]]*$/) prev = $0 }' "$f" \
        | grep -v '^\s*//' | grep -vE 'unsafe_op_in_unsafe_fn|#\[deny|#!\[' || true)
    if [ -n "$missing" ]; then
        # A SAFETY comment may sit a few lines above (before attributes or a multi-line call).
        while IFS= read -r line; do
            n=$(echo "$line" | cut -d: -f2)
            start=$(( n > 6 ? n - 6 : 1 ))
            if ! sed -n "${start},${n}p" "$f" | grep -q 'SAFETY'; then
                echo "lint: unsafe without a // SAFETY: comment: $line" >&2
                fail=1
            fi
        done <<< "$missing"
    fi
done

# The job secret must never be formatted into logs.
hits=$(grep -rnE '(info|warn|error|debug|trace)!\(.*secret' --include=*.rs core transports horovodrun | grep -viE 'redact|no secret|not the secret|never' || true)
if [ -n "$hits" ]; then
    echo "lint: a log line mentions the secret:" >&2
    echo "$hits" >&2
    fail=1
fi
exit $fail
