//! Where the operator runs: the node's name and, inside a container, that container's id (so that HemoStat never acts on itself).
//!
//! Inside a Docker container (the image is `FROM scratch`: nothing but `/proc` to go by) the id
//! is found, in this order:
//!
//! 1. `/proc/self/cgroup`: `/docker/<id>` (cgroupfs), `docker-<id>.scope` (systemd) or
//!    `/kubepods/…/<id>` (a pod on a Docker node), when the cgroup namespace is the host's
//!    (cgroup v1, or v2 with `--cgroupns host`); this is exact, even in a pod;
//! 2. `/proc/self/mountinfo`: Docker bind-mounts `/etc/hostname` (and `hosts`, `resolv.conf`)
//!    from `<data-root>/containers/<id>/`, whatever the storage driver or cgroup setup (in a
//!    pod that is the pod's sandbox, so it comes second);
//! 3. the host name, when it is the 12-hex-digit short id Docker gives by default.
//!
//! The responder's gate refuses any action on a container whose id equals, or starts with, it.

/// The host's name (`/proc/sys/kernel/hostname`, else `/etc/hostname`, else `localhost`).
pub(crate) fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The id of the container this process runs in, if any.
pub(crate) fn own_container_id() -> Option<String> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    read("/proc/self/cgroup")
        .and_then(|c| id_from_cgroup(&c))
        .or_else(|| read("/proc/self/mountinfo").and_then(|m| id_from_mountinfo(&m)))
        .or_else(|| {
            read("/proc/sys/kernel/hostname")
                .or_else(|| read("/etc/hostname"))
                .and_then(|h| id_from_hostname(&h))
        })
}

fn is_hex_id(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The 64-hex-digit id after `<data-root>/containers/` on the line that mounts `/etc/hostname`.
pub(crate) fn id_from_mountinfo(mountinfo: &str) -> Option<String> {
    mountinfo.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let root = fields.nth(3)?;
        let mount_point = fields.next()?;
        if mount_point != "/etc/hostname" {
            return None;
        }
        let at = root.find("/containers/")? + "/containers/".len();
        let id = root[at..].split('/').next()?;
        is_hex_id(id, 64).then(|| id.to_owned())
    })
}

/// The 64-hex-digit id in a `/docker/<id>`, `docker-<id>.scope` or `/kubepods/…/<id>` cgroup path.
pub(crate) fn id_from_cgroup(cgroup: &str) -> Option<String> {
    cgroup.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        path.split('/').find_map(|part| {
            let id = part
                .strip_prefix("docker-")
                .and_then(|p| p.strip_suffix(".scope"))
                .unwrap_or(part);
            (is_hex_id(id, 64) && (path.contains("docker") || path.contains("kubepods")))
                .then(|| id.to_owned())
        })
    })
}

/// The host name, when it looks like Docker's default (the short, 12-hex-digit id).
pub(crate) fn id_from_hostname(hostname: &str) -> Option<String> {
    let h = hostname.trim();
    is_hex_id(h, 12).then(|| h.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "cc45d6f2e499aa26d3b91e48708c8917ffe4d7b6dcf26c3b05b5ac1103ea6757";

    #[test]
    fn the_id_comes_from_the_hostname_bind_mount_in_mountinfo() {
        let cases = [
            (
                format!("90 72 254:0 /var/lib/docker/containers/{ID}/hostname /etc/hostname rw,relatime - ext4 /dev/vda rw"),
                Some(ID),
            ),
            // another data root
            (
                format!("90 72 254:0 /data/docker/containers/{ID}/hostname /etc/hostname rw - ext4 /dev/vda rw"),
                Some(ID),
            ),
            // resolv.conf alone does not say it is /etc/hostname
            (
                format!("89 72 254:0 /var/lib/docker/containers/{ID}/resolv.conf /etc/resolv.conf rw - ext4 /dev/vda rw"),
                None,
            ),
            // a host process: no container bind mount
            ("22 1 0:21 / /proc rw,nosuid - proc proc rw".to_owned(), None),
            // a short id is not an id
            (
                "90 72 254:0 /var/lib/docker/containers/cc45d6/hostname /etc/hostname rw - ext4 x rw"
                    .to_owned(),
                None,
            ),
        ];
        for (mountinfo, want) in cases {
            assert_eq!(
                id_from_mountinfo(&mountinfo).as_deref(),
                want,
                "{mountinfo}"
            );
        }
    }

    #[test]
    fn the_id_comes_from_a_docker_cgroup_path() {
        let cases = [
            (format!("4:memory:/docker/{ID}\n0::/docker/{ID}"), Some(ID)),
            (format!("0::/system.slice/docker-{ID}.scope"), Some(ID)),
            ("0::/".to_owned(), None),
            (
                "4:memory:/process_api/a8f05821703571b67c6eb0d6f7ae0f2d".to_owned(),
                None,
            ),
            (format!("1:cpu:/kubepods/besteffort/pod1/{ID}"), Some(ID)),
            (format!("0::/user.slice/{ID}"), None),
        ];
        for (cgroup, want) in cases {
            assert_eq!(id_from_cgroup(&cgroup).as_deref(), want, "{cgroup}");
        }
    }

    #[test]
    fn only_a_default_docker_hostname_is_taken_as_the_short_id() {
        assert_eq!(
            id_from_hostname("cc45d6f2e499\n").as_deref(),
            Some("cc45d6f2e499")
        );
        assert_eq!(id_from_hostname("web-1"), None);
        assert_eq!(id_from_hostname("node-a"), None);
    }
}
