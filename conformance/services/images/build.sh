#!/usr/bin/env bash
# Builds the local Docker images the test fixtures start, with no container
# registry: a Debian base made by debootstrap from the machine's own apt
# mirror, the service installed into it from Debian and PyPI packages, then
# `docker import`.
#
#   conformance/services/images/build.sh [--force] [s3|postgres|all]   (default: all)
#
# Images:
#   chatvault-test/s3:latest   LocalBucket (PyPI `localbucket`), an S3 server
#                              whose `If-None-Match: *` is atomic and whose
#                              ListObjectsV2 pages correctly; listens on 9000,
#                              creates the buckets named in $S3_BUCKET. Served
#                              by a launcher that raises the listen backlog
#                              and scopes listings to the prefix's folder
#                              (same answers, O(prefix) instead of O(bucket)).
#   chatvault-test/postgres:latest  Debian's postgresql-15 with the upstream
#                              postgres image's interface (POSTGRES_PASSWORD,
#                              POSTGRES_USER, POSTGRES_DB, PGDATA; port 5432).
#
# Environment:
#   CHATVAULT_IMAGE_CACHE   cache folder (default /var/tmp/chatvault-images):
#                           the debootstrap base tarball and downloaded wheels
#   CHATVAULT_IMAGE_FORCE=1 rebuild images that already exist (same as --force)
#   CHATVAULT_DEBIAN_MIRROR Debian mirror (default: the one apt uses here)
#
# Needs root, debootstrap, tar and a running Docker engine. Idempotent: an
# image that exists is kept unless forced; the base tarball is reused.
set -euo pipefail

CACHE="${CHATVAULT_IMAGE_CACHE:-/var/tmp/chatvault-images}"
SUITE=bookworm
FORCE="${CHATVAULT_IMAGE_FORCE:-0}"
S3_IMAGE=chatvault-test/s3:latest
LOCALBUCKET_VERSION=1.2.1

log() { echo "build.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

# The Debian mirror apt is configured with (deb822 .sources or one-line
# .list), skipping the security archive.
debian_mirror() {
    if [[ -n "${CHATVAULT_DEBIAN_MIRROR:-}" ]]; then
        echo "$CHATVAULT_DEBIAN_MIRROR"
        return
    fi
    local uri
    uri=$(
        {
            grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
            grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
                sed -E 's/^deb (\[[^]]*\] )?//' | awk '{print $1}'
        } | grep -E '/debian/?$' | grep -v security | head -n 1
    ) || true
    echo "${uri:-http://deb.debian.org/debian}"
}

require() {
    [[ $(id -u) -eq 0 ]] || die "run as root (debootstrap and chroot need it)"
    for tool in debootstrap docker tar chroot python3; do
        command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install -y debootstrap docker.io)"
    done
    docker info >/dev/null 2>&1 || die "the Docker engine does not answer (start it: dockerd >/var/log/dockerd.log 2>&1 &)"
}

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# The minimal Debian base, made once and kept as a tarball.
base_tarball() {
    local tarball="$CACHE/base-$SUITE.tar"
    if [[ ! -s "$tarball" ]]; then
        local mirror root="$CACHE/base-$SUITE.rootfs"
        mirror=$(debian_mirror)
        log "debootstrap --variant=minbase $SUITE from $mirror"
        rm -rf "$root"
        debootstrap --variant=minbase "$SUITE" "$root" "$mirror" >"$CACHE/debootstrap.log" 2>&1 ||
            die "debootstrap failed; see $CACHE/debootstrap.log"
        tar -C "$root" -cf "$tarball.partial" .
        mv "$tarball.partial" "$tarball"
        rm -rf "$root"
    fi
    echo "$tarball"
}

# A fresh copy of the base for one image.
fresh_rootfs() {
    local root="$CACHE/rootfs-$1" tarball
    tarball=$(base_tarball)
    rm -rf "$root"
    mkdir -p "$root"
    tar -C "$root" -xf "$tarball"
    echo "$root"
}

# Runs a shell script inside the rootfs, with /proc and /dev mounted and
# services kept from starting.
in_chroot() {
    local root=$1 script=$2
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod +x "$root/usr/sbin/policy-rc.d"
    mount -t proc proc "$root/proc"
    mount --bind /dev "$root/dev"
    local status=0
    chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        DEBIAN_FRONTEND=noninteractive HOME=/root /bin/sh -euc "$script" || status=$?
    umount "$root/dev" || true
    umount "$root/proc" || true
    rm -f "$root/usr/sbin/policy-rc.d"
    return "$status"
}

# Packs the rootfs into an image.
import_image() {
    local root=$1 image=$2
    shift 2
    local changes=()
    for change in "$@"; do changes+=(--change "$change"); done
    tar -C "$root" -c . | docker import "${changes[@]}" - "$image" >/dev/null
    rm -rf "$root"
    log "built $image"
}

build_s3() {
    if image_exists "$S3_IMAGE" && [[ "$FORCE" != 1 ]]; then
        log "$S3_IMAGE exists (use --force to rebuild)"
        return
    fi
    local wheels="$CACHE/wheels" root
    mkdir -p "$wheels"
    # The wheel is fetched on the host with its pip (and its index and CA
    # settings); the chroot installs it offline.
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$wheels" \
        "localbucket==$LOCALBUCKET_VERSION" || die "pip could not download localbucket $LOCALBUCKET_VERSION"
    root=$(fresh_rootfs s3)
    mkdir -p "$root/tmp/wheels"
    cp "$wheels"/localbucket-"$LOCALBUCKET_VERSION"-*.whl "$root/tmp/wheels/"
    in_chroot "$root" '
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null
        apt-get clean
        rm -rf /var/lib/apt/lists/*
        python3 -m venv /opt/localbucket
        /opt/localbucket/bin/pip install --quiet --no-index --no-deps /tmp/wheels/localbucket-*.whl
        rm -rf /tmp/wheels /root/.cache
        /opt/localbucket/bin/localbucket --version
    '
    cat >"$root/opt/localbucket/chatvault_launcher.py" <<'PYTHON'
"""Serves LocalBucket with two changes that keep its behaviour and fix its cost
under the conformance suite's load:

- the listen backlog is raised from socketserver's 5 to 1024: a burst of new
  connections (object_store keeps up to 32 requests in flight per client, and
  LocalBucket closes the connection after every error response) otherwise
  overflows it, and each dropped SYN stalls its request for a second;
- ListObjects walks only the folder the prefix names instead of the whole
  bucket. Keys are files under the bucket folder, so every key that starts
  with "a/b/c" lies under "a/b"; the listing is the same, but costs
  O(objects under the prefix) instead of O(objects in the bucket).
"""

import os
import sys
from pathlib import Path

import localbucket


class Server(localbucket.ThreadingHTTPServer):
    request_queue_size = 1024


def walk_root(bucket_dir: Path, prefix: str) -> Path:
    """The folder holding every key that starts with `prefix`."""
    folder, _, _ = prefix.rpartition("/")
    parts = folder.split("/") if folder else []
    if any(part in ("", ".", "..") for part in parts):
        return bucket_dir
    return bucket_dir.joinpath(*parts)


def list_entries(self, bucket_dir, prefix, delimiter, marker, marker_is_prefix, max_keys):
    """LocalBucket 1.2.1's S3Handler._list_entries, walking walk_root() only."""
    contents, common_prefixes = [], []
    last_entry, truncated = "", False
    keys = []
    for directory, _, files in os.walk(walk_root(bucket_dir, prefix)):
        for name in files:
            if name.startswith(localbucket.TEMP_PREFIX):
                continue
            path = Path(directory, name)
            keys.append((path.relative_to(bucket_dir).as_posix(), path))
    keys.sort(key=lambda item: item[0].encode())
    for key, path in keys:
        if not key.startswith(prefix):
            continue
        if marker and (
            key.encode() <= marker.encode()
            or (marker_is_prefix and key.startswith(marker))
        ):
            continue
        common = ""
        if delimiter:
            index = key.find(delimiter, len(prefix))
            if index >= 0:
                common = key[: index + len(delimiter)]
        if common and common_prefixes and common_prefixes[-1] == common:
            continue
        if len(contents) + len(common_prefixes) >= max_keys:
            truncated = max_keys > 0
            break
        if common:
            common_prefixes.append(common)
            last_entry = "P:" + common
        else:
            contents.append((key, path))
            last_entry = "K:" + key
    return contents, common_prefixes, truncated, last_entry


if localbucket.__version__ != "1.2.1":
    sys.exit(f"chatvault_launcher.py patches LocalBucket 1.2.1, found {localbucket.__version__}")
localbucket.ThreadingHTTPServer = Server
localbucket.S3Handler._list_entries = list_entries
sys.exit(localbucket.main())
PYTHON
    cat >"$root/usr/local/bin/chatvault-s3-entrypoint" <<'SCRIPT'
#!/bin/sh
# Creates the buckets named in $S3_BUCKET (space separated) and serves S3 on
# $S3_PORT. LocalBucket checks no credentials: any key and region work.
set -eu
data=${S3_DATA:-/data}
mkdir -p "$data"
for bucket in ${S3_BUCKET:-}; do mkdir -p "$data/$bucket"; done
exec /opt/localbucket/bin/python3 /opt/localbucket/chatvault_launcher.py \
    --host 0.0.0.0 --port "${S3_PORT:-9000}" "$data"
SCRIPT
    chmod +x "$root/usr/local/bin/chatvault-s3-entrypoint"
    import_image "$root" "$S3_IMAGE" \
        'ENTRYPOINT ["/usr/local/bin/chatvault-s3-entrypoint"]' \
        'EXPOSE 9000' \
        'ENV S3_BUCKET=chatvault-test S3_PORT=9000' \
        "LABEL org.chatvault.s3.server=localbucket-$LOCALBUCKET_VERSION+chatvault-launcher" \
        'LABEL org.chatvault.s3.atomic-create=true' \
        'LABEL org.chatvault.s3.checks-credentials=false'
}

# ---------------------------------------------------------------------------
# build_postgres: chatvault-test/postgres:latest, Debian's postgresql-15 with
# the upstream `postgres` image's interface (POSTGRES_PASSWORD required unless
# POSTGRES_HOST_AUTH_METHOD=trust, POSTGRES_USER, POSTGRES_DB, PGDATA; port
# 5432; the cluster is created on first start), for the Supabase fixture.
# ---------------------------------------------------------------------------
PG_IMAGE=chatvault-test/postgres:latest

build_postgres() {
    if image_exists "$PG_IMAGE" && [[ "$FORCE" != 1 ]]; then
        log "$PG_IMAGE exists (use --force to rebuild)"
        return
    fi
    local root
    root=$(fresh_rootfs postgres)
    # Debian's package would create and start a "main" cluster; the
    # entrypoint makes its own in $PGDATA instead, as upstream does.
    in_chroot "$root" '
        mkdir -p /etc/postgresql-common
        echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null
        apt-get clean
        rm -rf /var/lib/apt/lists/* /usr/share/doc /usr/share/man
        /usr/lib/postgresql/15/bin/postgres --version
    '
    cat >"$root/usr/local/bin/docker-entrypoint.sh" <<'SCRIPT'
#!/bin/sh
# The upstream postgres image's interface: POSTGRES_PASSWORD (required unless
# POSTGRES_HOST_AUTH_METHOD=trust), POSTGRES_USER, POSTGRES_DB, PGDATA.
set -eu
bin=/usr/lib/postgresql/15/bin
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"
auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
PGDATA="${PGDATA:-/var/lib/postgresql/data}"
if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != trust ]; then
    echo "error: POSTGRES_PASSWORD is not set (or set POSTGRES_HOST_AUTH_METHOD=trust)" >&2
    exit 1
fi
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
mkdir -p "$PGDATA" /var/run/postgresql
chown -R postgres:postgres "$PGDATA" /var/run/postgresql
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$pwfile"
    chown postgres "$pwfile"
    as_postgres "$bin/initdb" -D "$PGDATA" -U "$user" --pwfile="$pwfile" \
        --auth-local=trust --auth-host="$auth" --encoding=UTF8 --locale=C.UTF-8
    rm -f "$pwfile"
    echo "host all all all $auth" >>"$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    if [ "$db" != postgres ]; then
        as_postgres "$bin/pg_ctl" -D "$PGDATA" -o "-c listen_addresses=''" -w start
        as_postgres "$bin/psql" -v ON_ERROR_STOP=1 -U "$user" -d postgres -c "create database \"$db\""
        as_postgres "$bin/pg_ctl" -D "$PGDATA" -m fast -w stop
    fi
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups "$bin/postgres" -D "$PGDATA" "$@"
SCRIPT
    chmod +x "$root/usr/local/bin/docker-entrypoint.sh"
    import_image "$root" "$PG_IMAGE" \
        'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
        'EXPOSE 5432' \
        'ENV PGDATA=/var/lib/postgresql/data LANG=C.UTF-8' \
        'LABEL org.chatvault.postgres.server=debian-postgresql-15'
}

main() {
    local targets=()
    for arg in "$@"; do
        case "$arg" in
            --force) FORCE=1 ;;
            s3 | postgres) targets+=("$arg") ;;
            all) targets+=(s3 postgres) ;;
            -h | --help) sed -n '2,25p' "$0"; exit 0 ;;
            *) die "unknown argument: $arg (expected --force, s3, postgres or all)" ;;
        esac
    done
    [[ ${#targets[@]} -gt 0 ]] || targets=(s3 postgres)
    require
    mkdir -p "$CACHE"
    for target in "${targets[@]}"; do
        if declare -F "build_$target" >/dev/null; then
            "build_$target"
        else
            log "no build_$target in this script yet; skipped"
        fi
    done
}

main "$@"
