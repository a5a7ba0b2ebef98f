#!/usr/bin/env bash
# fastgate's build verbs. A fresh Debian machine needs only python3, gcc and git:
# everything else (the venv, Python packages, redis-server and PostgreSQL for the tests, nginx
# and wrk for the benchmark) is installed here on first use.
#
#   ./build.sh build   create .venv, install dependencies, compile fastgate/_core
#   ./build.sh serve   build, then run the gateway on the packaged default config
#                      (extra arguments go to `fastgate serve`)
#   ./build.sh test    build, then run the whole test suite (extra arguments go to pytest;
#                      paths among them select those tests: ./build.sh test tests/compile/test_tls.py);
#                      the whole suite runs in FASTGATE_TEST_JOBS pytest processes (default 2,
#                      a test file's tests in one of them: their module fixtures are shared)
#   ./build.sh bench   build, then run the benchmarks in bench/ (router, transforms, wrk vs nginx)
#   ./build.sh debug   rebuild with line tracing and annotated HTML (fastgate/_core/*.html)
#   ./build.sh clean   remove build products (keeps .venv; `clean all` removes it too)
#
# Environment: FASTGATE_VENV (default .venv), FASTGATE_CFLAGS, FASTGATE_JOBS, FASTGATE_TEST_JOBS.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${FASTGATE_VENV:-.venv}
PY=$VENV/bin/python

log() { printf '[build.sh] %s\n' "$*" >&2; }

apt_install() {  # apt_install COMMAND PACKAGE...: install PACKAGE unless COMMAND exists
    local cmd=$1; shift
    command -v "$cmd" >/dev/null 2>&1 && return 0
    [ -x "/usr/sbin/$cmd" ] && return 0
    log "installing $* (apt-get)"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    if [ ! -f /tmp/.fastgate-apt-updated ]; then
        $sudo apt-get update -qq >/dev/null && touch /tmp/.fastgate-apt-updated
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_venv() {
    if [ ! -x "$PY" ]; then
        log "creating $VENV"
        python3 -m venv "$VENV" || { apt_install false python3-venv; python3 -m venv "$VENV"; }
    fi
    local want have=""
    want=$(cat pyproject.toml setup.py constraints.txt | sha256sum | cut -c1-16)
    [ -f "$VENV/.fastgate-deps" ] && have=$(cat "$VENV/.fastgate-deps")
    if [ "$want" != "$have" ]; then
        # every package comes through constraints.txt: the tested set, whatever PyPI serves today
        log "installing Python dependencies into $VENV (pinned by constraints.txt)"
        "$PY" -m pip install -q -c constraints.txt pip >/dev/null
        "$PY" -m pip install -q -c constraints.txt setuptools wheel Cython
        "$PY" -m pip install -q -c constraints.txt --no-build-isolation -e '.[test]'
        echo "$want" > "$VENV/.fastgate-deps"
    fi
}

build() {
    ensure_venv
    log "compiling fastgate/_core"
    "$PY" setup.py -q build_ext --inplace >/dev/null
}

verb=${1:-build}
[ $# -gt 0 ] && shift
case "$verb" in
    build) build ;;
    serve)
        build
        exec "$VENV/bin/fastgate" serve "$@" ;;
    test)
        build
        apt_install redis-server redis-server   # the multi-host throttle tests start their own
        # the fleet tests start their own PostgreSQL (tests/postgres_server.py: initdb, pg_ctl);
        # Debian keeps those in /usr/lib/postgresql/N/bin, off PATH
        compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || apt_install initdb postgresql
        apt_install chromium chromium            # the dashboard's browser test (tests/e2e/test_dashboard.py)
        apt_install chromedriver chromium-driver
        # arguments that name tests select them; with none (or only options) the whole suite runs
        targets=tests
        jobs="-n ${FASTGATE_TEST_JOBS:-2} --dist loadfile"
        for a in "$@"; do
            case "$a" in -n|-n*|-x|--exitfirst|--pdb) jobs="" ;; -*) ;; *) [ -e "${a%%::*}" ] && targets="" ;; esac
        done
        # named tests run in this one process; the whole suite in two (mostly waiting on the
        # processes its tests start: 10.6 -> 4.4 min on 2 cores)
        [ -n "$targets" ] || jobs=""
        exec "$PY" -m pytest -q -p no:cacheprovider $jobs "$@" $targets ;;
    bench)
        build
        apt_install nginx nginx-light
        apt_install wrk wrk
        "$PY" -m pytest -q -p no:cacheprovider -o python_files='bench_*.py' bench --benchmark-only --benchmark-columns=min,median,mean,ops,rounds
        exec "$PY" bench/wrk_compare.py "$@" ;;
    debug)
        ensure_venv
        rm -f fastgate/_core/*.c
        FASTGATE_DEBUG=1 "$PY" setup.py -q build_ext --inplace --force >/dev/null
        log "annotated: $(ls fastgate/_core/*.html | tr '\n' ' ')" ;;
    clean)
        rm -rf build fastgate/_core/*.c fastgate/_core/*.so fastgate/_core/*.html ./*.egg-info
        find . -name __pycache__ -type d -prune -exec rm -rf {} +
        [ "${1:-}" = all ] && rm -rf "$VENV"
        true ;;
    *) echo "usage: $0 {build|serve|test|bench|debug|clean}" >&2; exit 2 ;;
esac
