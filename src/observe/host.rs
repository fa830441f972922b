//! Where the operator runs: the node's name and, inside a container, that container's id.

/// The host's name (`/proc/sys/kernel/hostname`, else `/etc/hostname`, else `localhost`).
pub fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The id of the container this process runs in, if any (from /proc/self/mountinfo, where
/// Docker bind-mounts /etc/hostname from /var/lib/docker/containers/<id>/).
pub fn own_container_id() -> Option<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        let at = line.find("/containers/")? + "/containers/".len();
        let id: String = line[at..]
            .chars()
            .take_while(|c| c.is_ascii_hexdigit())
            .collect();
        (id.len() == 64 && line.contains("/hostname")).then_some(id)
    })
}
