# apt_get: apt-get as root (the sourcing script defines as_root), waiting up to ~10 min
# while another apt or dpkg holds a lock (unattended-upgrades, apt-daily, a second
# bootstrap). DPkg::Lock::Timeout covers dpkg's lock but not the package lists' lock
# that `apt-get update` takes, which fails at once: that error is retried. apt's
# standard output goes where the caller sends it; its errors are shown when it fails.
# Sourced by scripts/bootstrap.sh and packaging/build-deb.sh.
apt_get() {
    local err tries=0
    while ! err=$(as_root apt-get -o DPkg::Lock::Timeout=600 "$@" 2>&1 1>&3); do
        if [[ $err != *"Could not get lock"* ]] || [ $((tries += 1)) -gt 200 ]; then
            printf '%s\n' "$err" >&2
            return 1
        fi
        sleep 3
    done 3>&1
}
