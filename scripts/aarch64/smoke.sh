#!/usr/bin/env bash
# The aarch64 smoke test: edge-agent on an emulated arm64 Debian bookworm Python 3.11
# (Raspberry Pi OS Bookworm's base), on an x86_64 machine, with no board, no root
# filesystem image and no binfmt registration.
#
#   scripts/aarch64/smoke.sh
#
#   1. tools     qemu-aarch64-static (qemu-user-static), mosquitto, mosquitto_sub:
#                installed with apt-get when missing
#   2. sysroot   bookworm's arm64 python3.11 and the libraries it needs, downloaded by
#                apt-get from a private apt state (the host's dpkg database, architectures
#                and sources are not changed) and unpacked with dpkg-deb -x
#   3. wheels    edge-agent's runtime dependencies as manylinux aarch64 CPython 3.11
#                wheels (pip --target --platform), one set per TFLite runtime: the
#                `tflite` and the `litert` extra of pyproject.toml
#   4. package   a wheel of this checkout (pip wheel --no-deps), installed with --no-deps
#   5. smoke     smoke.py under qemu-aarch64-static, once per runtime, publishing to a
#                mosquitto started here on a free port; a QoS 1 subscriber session must
#                receive exactly the payload smoke.py published
#
# 1-3 are cached under $AARCH64_CACHE, keyed by their inputs (pyproject.toml's
# dependencies, the package list, the Python version): a warm run does only 4 and 5.
# docs/aarch64.md explains the choices and what was learnt about LiteRT under qemu.
#
# Environment:
#   AARCH64_CACHE                  cache directory (default /var/cache/edge-agent-aarch64)
#   AARCH64_RUNTIMES               default "tflite-runtime litert"
#   AARCH64_QEMU_CPUS              emulated CPUs, one run each per runtime (default
#                                  "cortex-a72 cortex-a76": the cores of the Raspberry Pi 4
#                                  and 5); also cortex-a53 (Pi 3, Zero 2 W), neoverse-n1
#   AARCH64_CPUINFO=host           let the guest see the host's /proc/cpuinfo, as plain
#                                  qemu-user 7.2 does (reproduces the LiteRT crash)
#   AARCH64_APT_SOURCES            a sources.list file of Debian bookworm repositories
#                                  (default: the host's own Debian mirrors, bookworm suites)
#   AARCH64_KEEP=1                 keep the run's temporary directory (logs, payloads)
#   EDGE_AGENT_FIXTURES            the test fixtures (default tests/fixtures)
#   EDGE_AGENT_ALLOW_NO_AARCH64=1  where apt-get or qemu-user-static cannot be had,
#                                  print SKIPPED and exit 0 instead of failing
#   PYTHON                         the host's Python >= 3.11, for pip (default python3)
#
# Exit status: 0 passed (or SKIPPED), 1 failed or the machine lacks the means.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROJECT=$(cd "$HERE/../.." && pwd)
FIXTURES=${EDGE_AGENT_FIXTURES:-$PROJECT/tests/fixtures}
RUNTIMES=${AARCH64_RUNTIMES:-tflite-runtime litert}
CPUS=${AARCH64_QEMU_CPUS:-cortex-a72 cortex-a76}
PYTHON=${PYTHON:-python3}

SUITE=bookworm                    # Debian release of the sysroot
PY=3.11                           # its python3
SYSROOT_PACKAGES=("python$PY" libstdc++6)  # the TFLite wheels link the system's libstdc++
RECIPE=1                          # bump to rebuild every cache entry

# --- output ------------------------------------------------------------------

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf '\033[1;31mFAILED: %s\033[0m\n' "$*" >&2; exit 1; }

# show_log FILE: the end of a log, for a failure message
show_log() { echo "--- last lines of $1:" >&2; tail -n 25 "$1" >&2 || true; }

no_means() {
    if [ "${EDGE_AGENT_ALLOW_NO_AARCH64:-}" = 1 ]; then
        echo "SKIPPED: aarch64 smoke test: $* (EDGE_AGENT_ALLOW_NO_AARCH64=1)"
        exit 0
    fi
    {
        printf '\033[1;31m'
        echo "ERROR: aarch64 NOT TESTED: this machine cannot run the aarch64 smoke test:"
        echo "ERROR:   $*"
        printf '\033[0m'
        echo "It needs apt-get (Debian's arm64 packages, qemu-user-static) and root or sudo to"
        echo "install what is missing; or set EDGE_AGENT_ALLOW_NO_AARCH64=1 to skip it (exit 0)."
    } >&2
    exit 1
}

STARTED=${EPOCHREALTIME/,/.}
STEP_START=$STARTED
TIMINGS=()
# timed NAME: ends the step that began at the previous call, prints and keeps its time
timed() {
    local now=${EPOCHREALTIME/,/.} took
    took=$(awk -v a="$STEP_START" -v b="$now" 'BEGIN { printf "%.1f", b - a }')
    TIMINGS+=("$(printf '    %-52s %6s s' "$1" "$took")")
    say "$1: $took s"
    STEP_START=$now
}

# --- 1. tools ------------------------------------------------------------------

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else return 1
    fi
}

APT_UPDATED=
apt_install() {
    command -v apt-get >/dev/null || no_means "no apt-get to install $* with"
    say "installing $* with apt-get"
    local log=${TMPDIR:-/tmp}/edge-agent-aarch64-apt.log
    if [ -z "$APT_UPDATED" ]; then
        as_root apt-get update -qq >"$log" 2>&1 || { show_log "$log"; no_means "apt-get update failed"; }
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" \
        >"$log" 2>&1 || { show_log "$log"; no_means "apt-get install $* failed"; }
}

ensure_tools() {
    local missing=()
    command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
    command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
    command -v mosquitto_sub >/dev/null || missing+=(mosquitto-clients)
    if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
    command -v qemu-aarch64-static >/dev/null || no_means "no qemu-aarch64-static (qemu-user-static)"
    if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
        no_means "no apt-get and dpkg-deb to fetch Debian's arm64 packages with"
    fi
    "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null ||
        no_means "no Python >= 3.11 on the host ($PYTHON) to run pip with"
    "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
    QEMU=$(command -v qemu-aarch64-static)
    MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
}

# The cache: the default needs root; anyone else falls back to their own cache.
choose_cache() {
    CACHE=${AARCH64_CACHE:-/var/cache/edge-agent-aarch64}
    if ! mkdir -p "$CACHE" 2>/dev/null || [ ! -w "$CACHE" ]; then
        [ -z "${AARCH64_CACHE:-}" ] || die "cannot write to AARCH64_CACHE=$CACHE"
        CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/edge-agent-aarch64
        mkdir -p "$CACHE"
    fi
    mkdir -p "$CACHE/logs"
    # One run at a time builds or uses the cache (and rewrites the sysroot's /proc/cpuinfo).
    if command -v flock >/dev/null; then
        exec 9>"$CACHE/.lock"
        flock -w 1800 9 || die "another smoke run holds $CACHE/.lock"
    fi
}

key_of() { printf '%s\n' "$@" | sha256sum | cut -c1-12; }

# prune PATTERN KEEP: remove the older cache entries of one kind
prune() {
    local entry
    for entry in "$CACHE"/$1; do
        if [ -e "$entry" ] && [ "$entry" != "$2" ]; then rm -rf "$entry"; fi
    done
}

# A host virtualenv with pip and pyproject.toml's build requirements: builds the
# edge-agent wheel without fetching anything once it exists.
ensure_host_venv() {
    local build_requires pyver key
    build_requires=$("$PYTHON" - "$PROJECT/pyproject.toml" <<'EOF'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["build-system"]["requires"]))
EOF
)
    pyver=$("$PYTHON" -c 'import sys; print(sys.version.split()[0])')
    key=$(key_of "$RECIPE" "$pyver" "$build_requires")
    HOST_VENV=$CACHE/host-venv-$key
    FRESH=cached
    if [ ! -f "$HOST_VENV/.complete" ]; then
        FRESH=built
        say "host virtualenv for pip ($PYTHON $pyver)"
        rm -rf "$HOST_VENV"
        local log=$CACHE/logs/host-venv.log
        { "$PYTHON" -m venv "$HOST_VENV" &&
          "$HOST_VENV/bin/python" -m pip install -q --upgrade pip &&
          mapfile -t reqs <<<"$build_requires" &&
          "$HOST_VENV/bin/python" -m pip install -q "${reqs[@]}"; } >"$log" 2>&1 ||
            { show_log "$log"; die "could not create $HOST_VENV"; }
        touch "$HOST_VENV/.complete"
        prune 'host-venv-*' "$HOST_VENV"
    fi
    PIP=("$HOST_VENV/bin/python" -m pip --disable-pip-version-check)
}

# --- 2. sysroot ----------------------------------------------------------------

# "URI SUITE" of the host's own Debian repositories (those whose Release file says
# o=Debian, whatever release the host runs; third-party ones are left out).
host_debian_repos() {
    apt-cache policy 2>/dev/null | awk '
        $1 ~ /^[0-9]+$/ && $NF == "Packages" { split($3, s, "/"); uri = $2; suite = s[1]; next }
        /^ +release / && uri != "" { if ($0 ~ /[ ,]o=Debian(,|$)/) print uri, suite; uri = "" }' |
        sort -u
}

# The repositories to take the arm64 packages from, as sources.list lines: the
# host's Debian mirrors with the bookworm suites, or AARCH64_APT_SOURCES.
apt_sources() {
    if [ -n "${AARCH64_APT_SOURCES:-}" ]; then
        grep -v '^[[:space:]]*#' "$AARCH64_APT_SOURCES"
        return
    fi
    local uri suite
    host_debian_repos | while read -r uri suite; do
        case $suite in
            *-security) suite=$SUITE-security ;;
            *-updates) suite=$SUITE-updates ;;
            *-*) continue ;;  # backports, proposed-updates: not wanted
            *) suite=$SUITE ;;
        esac
        echo "deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${uri%/} $suite main"
    done | sort -u
}

# qemu running the sysroot's python3.11: run_target [QEMU OPTIONS --] ARGS...
run_target() {
    local opts=()
    if [ "${1:-}" = -cpu ]; then opts=(-cpu "$2"); shift 2; fi
    timeout 900 env -i PATH=/usr/bin:/bin HOME="${RUN:-/tmp}" LANG=C.UTF-8 PYTHONPATH="${TARGET_PATH:-}" \
        PYTHONDONTWRITEBYTECODE=1 PYTHONNOUSERSITE=1 \
        "$QEMU" "${opts[@]}" -L "$SYSROOT" "$SYSROOT/usr/bin/python$PY" "$@"
}

ensure_sysroot() {
    local sources key
    if [ -z "${AARCH64_APT_SOURCES:-}" ] && [ -z "$(host_debian_repos)" ] && [ -z "$APT_UPDATED" ]; then
        as_root apt-get update -qq >/dev/null 2>&1 || true   # no package lists yet?
        APT_UPDATED=1
    fi
    sources=$(apt_sources)
    [ -n "$sources" ] ||
        no_means "no Debian repository in the host's apt sources: set AARCH64_APT_SOURCES to a file of Debian $SUITE sources.list lines"
    key=$(key_of "$RECIPE" "$SUITE" "${SYSROOT_PACKAGES[*]}" "$sources")
    SYSROOT=$CACHE/sysroot-$SUITE-arm64-$key
    FRESH=cached
    if [ -f "$SYSROOT/.complete" ]; then return; fi
    FRESH=built

    say "sysroot: Debian $SUITE arm64 ${SYSROOT_PACKAGES[*]} and their dependencies"
    local work=$CACHE/build-sysroot log=$CACHE/logs/sysroot.log
    rm -rf "$work" "$SYSROOT"
    mkdir -p "$work"/apt/lists/partial "$work"/apt/archives/partial "$work"/apt/preferences.d "$work/root"
    echo "$sources" >"$work/apt/sources.list"
    : >"$work/apt/status"   # nothing installed: apt resolves every dependency
    # A private apt state for arm64 only: the host's sources, lists, dpkg status and
    # architectures stay as they are (its apt.conf, e.g. a proxy, still applies).
    local apt=(apt-get -q
        -o APT::Architecture=arm64 -o APT::Architectures::=arm64
        -o Dir::State="$work/apt" -o Dir::State::status="$work/apt/status"
        -o Dir::State::Lists="$work/apt/lists"
        -o Dir::Cache="$work/apt" -o Dir::Cache::archives="$work/apt/archives"
        -o Dir::Etc::SourceList="$work/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts="$work/apt/preferences.d"
        -o Acquire::Languages=none -o APT::Sandbox::User="$(id -un)" -o Debug::NoLocking=1)
    {
        "${apt[@]}" update &&
        "${apt[@]}" install -y --download-only --no-install-recommends "${SYSROOT_PACKAGES[@]}"
    } >"$log" 2>&1 || { show_log "$log"; die "could not download the arm64 packages"; }
    local deb
    for deb in "$work"/apt/archives/*.deb; do
        dpkg-deb -x "$deb" "$work/root"
        # shellcheck disable=SC2016 # dpkg's own ${Field} syntax
        dpkg-deb -W --showformat='${Package} ${Version}\n' "$deb" >>"$work/root/.packages"
    done

    SYSROOT=$work/root
    local glibc
    glibc=$(run_target -c 'import platform; print(platform.libc_ver()[1])') ||
        die "the arm64 python$PY does not run under $QEMU"
    echo "$glibc" >"$SYSROOT/.glibc"
    # Debian compiles the standard library at install time (py3compile); dpkg-deb -x
    # does not, and compiling it on every start under emulation costs seconds. Written
    # through the sysroot's host path: never through a guest path, which qemu would
    # send to the host's own /usr when the file does not exist in the sysroot.
    run_target -m compileall -q -j0 "$SYSROOT/usr/lib/python$PY" >>"$log" 2>&1 ||
        say "warning: some of the standard library did not compile (see $log)"
    touch "$SYSROOT/.complete"
    SYSROOT=$CACHE/sysroot-$SUITE-arm64-$key
    mv "$work/root" "$SYSROOT"
    rm -rf "$work"
    prune "sysroot-$SUITE-arm64-*" "$SYSROOT"
}

# The sysroot's /proc/cpuinfo, as the board's kernel would print it for CPU $1.
#
# qemu-user 7.2 (Debian bookworm's) shows an aarch64 guest the host's x86 /proc/cpuinfo;
# LiteRT >= 2.2's cpuinfo library then finds no ARM core in it and crashes in
# cpuinfo_arm_linux_init (docs/aarch64.md). A real board, or qemu >= 8.2, which
# emulates the file itself, shows an ARM one; with -L, qemu 7.2 opens this file instead.
write_cpuinfo() {
    if [ "${AARCH64_CPUINFO:-}" = host ]; then rm -f "$SYSROOT/proc/cpuinfo"; return; fi
    local part variant revision features model
    case $1 in
        cortex-a53) part=0xd03 variant=0x0 revision=4 model="Raspberry Pi 3 Model B Plus Rev 1.3"
                    features="fp asimd evtstrm crc32 cpuid" ;;
        cortex-a72) part=0xd08 variant=0x0 revision=3 model="Raspberry Pi 4 Model B Rev 1.5"
                    features="fp asimd evtstrm crc32 cpuid" ;;
        cortex-a76) part=0xd0b variant=0x4 revision=1 model="Raspberry Pi 5 Model B Rev 1.0"
                    features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" ;;
        neoverse-n1) part=0xd0c variant=0x3 revision=1 model=""
                    features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs" ;;
        *) die "AARCH64_QEMU_CPUS: no /proc/cpuinfo known for '$1' (cortex-a53, cortex-a72, cortex-a76, neoverse-n1)" ;;
    esac
    local n i text="" block
    n=$(getconf _NPROCESSORS_CONF)  # as many as the host's sysfs, which the guest sees too
    for ((i = 0; i < n; i++)); do
        printf -v block 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %d\n\n' \
            "$i" "$features" "$variant" "$part" "$revision"
        text+=$block
    done
    if [ -n "$model" ]; then printf -v block 'Hardware\t: BCM2835\nModel\t\t: %s\n' "$model"; text+=$block; fi
    mkdir -p "$SYSROOT/proc"
    if [ ! -f "$SYSROOT/proc/cpuinfo" ] || ! printf '%s' "$text" | cmp -s - "$SYSROOT/proc/cpuinfo"; then
        printf '%s' "$text" >"$SYSROOT/proc/cpuinfo.new"
        mv "$SYSROOT/proc/cpuinfo.new" "$SYSROOT/proc/cpuinfo"
    fi
}

# --- 3. wheels -----------------------------------------------------------------

extra_of() {
    case $1 in
        tflite-runtime) echo tflite ;;
        litert) echo litert ;;
        *) die "AARCH64_RUNTIMES: unknown runtime '$1' (tflite-runtime, litert)" ;;
    esac
}

# pip's --platform takes exact tags: every manylinux the sysroot's glibc runs.
platform_args() {
    local minor glibc
    glibc=$(cat "$SYSROOT/.glibc")
    for ((minor = ${glibc#2.}; minor >= 17; minor--)); do
        printf -- '--platform\nmanylinux_2_%d_aarch64\n' "$minor"
    done
    printf -- '--platform\nmanylinux2014_aarch64\n'
}

# ensure_site RUNTIME: sets SITE to the cached aarch64 dependencies of that runtime
ensure_site() {
    local extra requirements platforms key
    extra=$(extra_of "$1")
    requirements=$("$PYTHON" - "$PROJECT/pyproject.toml" "$extra" <<'EOF'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)["project"]
print("\n".join(project["dependencies"] + project["optional-dependencies"][sys.argv[2]]))
EOF
) || die "cannot read the dependencies of edge-agent[$extra] from pyproject.toml"
    platforms=$(platform_args)
    key=$(key_of "$RECIPE" "$PY" "$requirements" "$platforms")
    SITE=$CACHE/site-$extra-cp${PY/./}-aarch64-$key
    FRESH=cached
    if [ -f "$SITE/.complete" ]; then return; fi
    FRESH=built

    say "aarch64 wheels for edge-agent[$extra]: $(echo "$requirements" | paste -sd' ')"
    local work=$CACHE/build-site-$extra log=$CACHE/logs/site-$extra.log
    rm -rf "$work" "$SITE"
    mapfile -t platform_list <<<"$platforms"
    mapfile -t requirement_list <<<"$requirements"
    "${PIP[@]}" install -q --no-warn-conflicts --target "$work" "${platform_list[@]}" \
        --only-binary=:all: --python-version "$PY" --implementation cp --abi "cp${PY/./}" \
        "${requirement_list[@]}" >"$log" 2>&1 ||
        { show_log "$log"; die "could not install the aarch64 wheels of edge-agent[$extra]"; }
    "${PIP[@]}" list --path "$work" --format=freeze 2>/dev/null >"$work/.versions"
    # Bytecode compiled once, by the target's own interpreter.
    run_target -m compileall -q -j0 "$work" >>"$log" 2>&1 ||
        say "warning: some of $work did not compile (see $log)"
    touch "$work/.complete"
    mv "$work" "$SITE"
    prune "site-$extra-cp${PY/./}-aarch64-*" "$SITE"
}

# --- 4. package ----------------------------------------------------------------

# A wheel of the working tree, as a board would install it (README: pip wheel --no-deps .)
build_package() {
    local log=$RUN/package.log
    mkdir -p "$RUN/src"
    # models/: the demo files the wheel carries (pyproject data-files), not the bench model
    (cd "$PROJECT" && tar --exclude=__pycache__ --exclude=models/bench \
        -cf - pyproject.toml README.md edge_agent models) |
        tar -C "$RUN/src" -xf -
    { "${PIP[@]}" wheel -q --no-deps --no-build-isolation -w "$RUN/dist" "$RUN/src" &&
      "${PIP[@]}" install -q --no-deps --target "$RUN/package" "$RUN"/dist/edge_agent-*.whl; } \
        >"$log" 2>&1 || { show_log "$log"; die "could not build and install the edge-agent wheel"; }
    WHEEL=$(basename "$RUN"/dist/edge_agent-*.whl)
}

# --- 5. broker and smoke runs --------------------------------------------------

MOSQUITTO_PID=
cleanup() {
    if [ -n "$MOSQUITTO_PID" ]; then kill "$MOSQUITTO_PID" 2>/dev/null || true; fi
    if [ -z "${RUN:-}" ]; then return; fi
    if [ "${AARCH64_KEEP:-}" = 1 ]; then echo "kept $RUN" >&2; else rm -rf "$RUN"; fi
}

start_broker() {
    PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    cat >"$RUN/mosquitto.conf" <<EOF
listener $PORT 127.0.0.1
allow_anonymous true
user $(id -un)
persistence false
log_dest file $RUN/mosquitto.log
EOF
    "$MOSQUITTO" -c "$RUN/mosquitto.conf" >>"$RUN/mosquitto.log" 2>&1 &
    MOSQUITTO_PID=$!
    local i
    for ((i = 0; i < 100; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return; fi
        kill -0 "$MOSQUITTO_PID" 2>/dev/null || { show_log "$RUN/mosquitto.log"; die "mosquitto exited"; }
        sleep 0.1
    done
    die "mosquitto did not listen on 127.0.0.1:$PORT within 10 s"
}

# smoke RUNTIME CPU: one run of smoke.py under emulation, and the subscriber's check
smoke() {
    local runtime=$1 cpu=$2 pipeline topic client payload received rc=0
    pipeline=$runtime-$cpu
    topic=edge/aarch64-smoke/$pipeline/event
    client=smoke-subscriber-$pipeline
    payload=$RUN/$pipeline.payload
    received=$RUN/$pipeline.received
    local sub=(mosquitto_sub -h 127.0.0.1 -p "$PORT" -i "$client" -c -q 1 -t "$topic")
    # A persistent QoS 1 session first: the broker queues the event for it, so the
    # subscriber cannot miss it however the two processes are scheduled.
    "${sub[@]}" -E || die "mosquitto_sub could not subscribe to $topic"
    write_cpuinfo "$cpu"
    TARGET_PATH=$RUN/package:$SITE
    say "smoke.py on $runtime, qemu-aarch64 -cpu $cpu"
    run_target -cpu "$cpu" "$HERE/smoke.py" --runtime "$runtime" --project "$PROJECT" \
        --fixtures "$FIXTURES" --port "$PORT" --topic "$topic" --pipeline "$pipeline" \
        --payload-out "$payload" --tag "$runtime/$cpu" || rc=$?
    if [ "$rc" -ne 0 ]; then
        [ "$rc" -lt 128 ] || echo "smoke.py was killed by signal $((rc - 128)) under emulation" >&2
        die "smoke.py on $runtime ($cpu) exited with $rc (docs/aarch64.md: LiteRT under qemu)"
    fi
    "${sub[@]}" -C 1 -W 60 -N >"$received" ||
        die "the subscriber received nothing on $topic within 60 s"
    cmp -s "$payload" "$received" ||
        die "received on $topic: $(cat "$received"); published: $(cat "$payload")"
    echo "  received on $topic (QoS 1, $(wc -c <"$received") bytes), identical to the published payload:"
    echo "    $(cat "$received")"
    timed "smoke.py on $runtime, $cpu (emulated)"
    CHECKED+=("$runtime/$cpu")
}

main() {
    [ -f "$FIXTURES/models/mobilenet_v1_0.25_128_quant.tflite" ] ||
        die "the test fixtures are missing at $FIXTURES; set EDGE_AGENT_FIXTURES"
    if [ -z "${RUNTIMES// /}" ] || [ -z "${CPUS// /}" ]; then
        die "AARCH64_RUNTIMES and AARCH64_QEMU_CPUS must not be empty"
    fi
    say "aarch64 smoke test of $PROJECT"
    ensure_tools
    choose_cache
    timed "tools (qemu-user-static, mosquitto)"
    ensure_host_venv
    timed "host pip ($FRESH)"
    ensure_sysroot
    timed "sysroot ($FRESH)"

    RUN=$(mktemp -d "${TMPDIR:-/tmp}/edge-agent-aarch64.XXXXXX")
    trap cleanup EXIT
    build_package
    timed "edge-agent wheel ($WHEEL)"
    start_broker
    timed "mosquitto on 127.0.0.1:$PORT"

    CHECKED=()
    local runtime cpu
    for runtime in $RUNTIMES; do
        ensure_site "$runtime"
        timed "aarch64 wheels for $runtime ($FRESH)"
        for cpu in $CPUS; do smoke "$runtime" "$cpu"; done
    done

    local total
    total=$(awk -v a="$STARTED" -v b="${EPOCHREALTIME/,/.}" 'BEGIN { printf "%.1f", b - a }')
    echo
    echo "aarch64 smoke test: OK on ${CHECKED[*]}"
    echo "  emulator: $("$QEMU" --version | head -n 1), on $(uname -m)"
    echo "  sysroot:  Debian $SUITE arm64, $(grep -E "^(python$PY|libc6) " "$SYSROOT/.packages" | paste -sd, | sed 's/,/, /g')"
    for runtime in $RUNTIMES; do
        ensure_site "$runtime"
        echo "  $runtime: $(grep -iE '^(numpy|tflite-runtime|ai-edge-litert|pillow|cryptography|paho-mqtt|pydantic)==' \
            "$SITE/.versions" | paste -sd' ')"
    done
    echo "  cache:    $CACHE ($(du -sh "$CACHE" 2>/dev/null | cut -f1))"
    echo "  timings:"
    printf '%s\n' "${TIMINGS[@]}"
    echo "  total: $total s"
}

main "$@"
