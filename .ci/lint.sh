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
