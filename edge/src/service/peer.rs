//! Who is on the other end of the admin socket (SO_PEERCRED), and may they use it.
//!
//! The socket's mode (0660) already keeps out users outside its group; the check here is a
//! second fence, against a mis-set mode or group: root, the service's own user, and members of
//! `[admin] allowed_groups` (primary or supplementary group) are let through; everyone else
//! gets 403 before any handler runs.

use std::collections::BTreeSet;
use std::path::Path;

/// The peer's credentials as the kernel reported them when it connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

impl PeerCred {
    /// The peer's supplementary groups, from `/proc/<pid>/status` (empty when unknown).
    pub fn supplementary_groups(&self) -> Vec<u32> {
        let Some(pid) = self.pid else {
            return Vec::new();
        };
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map(|s| parse_groups_line(&s))
            .unwrap_or_default()
    }
}

fn parse_groups_line(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Why `[admin] allowed_groups` could not be used.
#[derive(Debug, thiserror::Error)]
#[error("[admin] allowed_groups: no group {0:?} in /etc/group (create it, or give its numeric id)")]
pub struct UnknownGroup(pub String);

/// Which peers may use the admin API.
#[derive(Debug, Clone)]
pub struct PeerPolicy {
    service_uid: u32,
    gids: BTreeSet<u32>,
    /// The first group named: the socket's group.
    socket_group: Option<u32>,
}

impl PeerPolicy {
    /// Resolve `groups` (names or numeric ids) against `group_file` (normally `/etc/group`).
    pub fn new(groups: &[String], group_file: &Path) -> Result<Self, UnknownGroup> {
        let table = std::fs::read_to_string(group_file).unwrap_or_default();
        let mut gids = BTreeSet::new();
        let mut socket_group = None;
        for g in groups {
            let gid = g
                .parse::<u32>()
                .ok()
                .or_else(|| gid_of(&table, g))
                .ok_or_else(|| UnknownGroup(g.clone()))?;
            socket_group.get_or_insert(gid);
            gids.insert(gid);
        }
        Ok(Self {
            service_uid: current_uid(),
            gids,
            socket_group,
        })
    }

    /// Only root and the service's own user (tests; `allowed_groups = []`).
    pub fn owner_only() -> Self {
        Self {
            service_uid: current_uid(),
            gids: BTreeSet::new(),
            socket_group: None,
        }
    }

    /// The group the socket file is given (the first of `allowed_groups`), so its members can
    /// connect through the 0660 mode.
    pub fn socket_group(&self) -> Option<u32> {
        self.socket_group
    }

    pub fn allows(&self, peer: &PeerCred) -> bool {
        peer.uid == 0
            || peer.uid == self.service_uid
            || self.gids.contains(&peer.gid)
            || (!self.gids.is_empty()
                && peer
                    .supplementary_groups()
                    .iter()
                    .any(|g| self.gids.contains(g)))
    }
}

fn gid_of(table: &str, name: &str) -> Option<u32> {
    table.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then_some(())?;
        fields.nth(1)?.parse().ok()
    })
}

fn current_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_resolve_by_name_or_number_and_unknown_names_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("group");
        std::fs::write(&file, "root:x:0:\nmaskgate-admin:x:990:alice,bob\n").unwrap();
        let p = PeerPolicy::new(&["maskgate-admin".into(), "1234".into()], &file).unwrap();
        let peer = |uid, gid| PeerCred {
            uid,
            gid,
            pid: None,
        };
        assert!(p.allows(&peer(5000, 990)));
        assert!(p.allows(&peer(5000, 1234)));
        assert!(p.allows(&peer(0, 5000)), "root");
        assert!(
            p.allows(&peer(current_uid(), 5000)),
            "the service's own user"
        );
        let stranger = if current_uid() == 5000 { 5001 } else { 5000 };
        assert!(!p.allows(&peer(stranger, 5000)));
        let err = PeerPolicy::new(&["staff".into()], &file).unwrap_err();
        assert!(err.to_string().contains("staff"));
    }

    #[test]
    fn supplementary_groups_come_from_proc_status() {
        assert_eq!(
            parse_groups_line("Name:\tx\nGroups:\t4 24 990 \nNSpgid: 1\n"),
            vec![4, 24, 990]
        );
        assert!(parse_groups_line("Name: x\n").is_empty());
        let me = PeerCred {
            uid: 1,
            gid: 1,
            pid: Some(std::process::id() as i32),
        };
        // Our own process has a Groups line (possibly empty); reading it must not fail.
        let _ = me.supplementary_groups();
    }
}
