//! Which node a new pool goes to, and which pools must leave their node:
//! the cluster half of placement (issue F, the `swarm` backend). No I/O:
//! the backend reads the nodes (Swarm's node list: CPUs, memory, labels,
//! state, availability) and the stored pools, and these functions decide,
//! so that bin-packing stays slotpack's and scheduling stays the engine's.

use std::collections::{BTreeMap, HashMap};

use crate::placement::Strategy;

/// A node as the engine describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The engine's node id.
    pub id: String,
    /// Address clients reach its published ports on.
    pub addr: String,
    /// CPUs in millicores.
    pub cpu_millis: u64,
    /// Memory in MiB.
    pub memory_mb: u64,
    /// Its labels (`node.labels.*` in Swarm).
    pub labels: BTreeMap<String, String>,
    /// The node is up (Swarm: state `ready`).
    pub ready: bool,
    /// Whether it takes work (Swarm's availability).
    pub availability: Availability,
}

/// Whether a node takes work, as Swarm says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// New pools may go there.
    Active,
    /// Keeps what it runs, takes nothing new.
    Pause,
    /// The engine stops what it runs there: its pools must move.
    Drain,
}

/// A pool's reservation on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// Pool number.
    pub pool: u64,
    /// Node it runs on.
    pub node: String,
    /// Memory reserved in MiB.
    pub memory_mb: u64,
    /// CPU reserved in millicores.
    pub cpu_millis: u64,
}

/// What a new pool needs of a node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Need {
    /// Memory in MiB.
    pub memory_mb: u64,
    /// CPU in millicores.
    pub cpu_millis: u64,
    /// Labels the node must carry with these values (a class pinned to
    /// some nodes).
    pub labels: BTreeMap<String, String>,
}

/// Free memory and CPU of every node once `pools` are counted.
fn free(nodes: &[Node], pools: &[Placed]) -> HashMap<String, (i128, i128)> {
    let mut f: HashMap<String, (i128, i128)> = nodes
        .iter()
        .map(|n| (n.id.clone(), (n.memory_mb as i128, n.cpu_millis as i128)))
        .collect();
    for p in pools {
        if let Some((m, c)) = f.get_mut(&p.node) {
            *m -= p.memory_mb as i128;
            *c -= p.cpu_millis as i128;
        }
    }
    f
}

/// The node a new pool needing `need` goes to, by `strategy`, among the
/// ready, active nodes with the labels asked for and room for it:
/// best-fit is the node left with the least free memory (then CPU),
/// first-fit the first by id, spread the one left with the most. `None`:
/// no node has room.
pub fn choose<'a>(
    nodes: &'a [Node],
    pools: &[Placed],
    need: &Need,
    strategy: Strategy,
) -> Option<&'a Node> {
    let free = free(nodes, pools);
    let fits = nodes.iter().filter(|n| {
        let (m, c) = free[&n.id];
        n.ready
            && n.availability == Availability::Active
            && need.labels.iter().all(|(k, v)| n.labels.get(k) == Some(v))
            && m >= need.memory_mb as i128
            && c >= need.cpu_millis as i128
    });
    let left = |n: &&Node| {
        let (m, c) = free[&n.id];
        (
            m - need.memory_mb as i128,
            c - need.cpu_millis as i128,
            n.id.clone(),
        )
    };
    match strategy {
        Strategy::BestFit => fits.min_by_key(left),
        Strategy::FirstFit => fits.min_by_key(|n| n.id.clone()),
        Strategy::Spread => fits.max_by_key(|n| {
            let (m, c, _) = left(n);
            // Ties go to the lowest id, as with the others.
            (m, c, std::cmp::Reverse(n.id.clone()))
        }),
    }
}

/// Why a pool must leave its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leave {
    /// The node is down (not ready) or no longer in the cluster.
    Lost,
    /// The node is drained: the engine stops its tasks.
    Drained,
}

/// The pools that must be made again elsewhere, and why: those on a node
/// that is gone, down or drained. A paused node keeps its pools (it only
/// takes no new ones).
pub fn must_leave(nodes: &[Node], pools: &[Placed]) -> Vec<(u64, Leave)> {
    pools
        .iter()
        .filter_map(|p| match nodes.iter().find(|n| n.id == p.node) {
            None => Some((p.pool, Leave::Lost)),
            Some(n) if !n.ready => Some((p.pool, Leave::Lost)),
            Some(n) if n.availability == Availability::Drain => Some((p.pool, Leave::Drained)),
            Some(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, memory_mb: u64, cpu_millis: u64) -> Node {
        Node {
            id: id.into(),
            addr: format!("10.0.0.{}", id.len()),
            cpu_millis,
            memory_mb,
            labels: BTreeMap::new(),
            ready: true,
            availability: Availability::Active,
        }
    }

    fn placed(pool: u64, node: &str, memory_mb: u64) -> Placed {
        Placed {
            pool,
            node: node.into(),
            memory_mb,
            cpu_millis: 1000,
        }
    }

    fn need(memory_mb: u64) -> Need {
        Need {
            memory_mb,
            cpu_millis: 1000,
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn best_fit_packs_the_fullest_node_that_has_room_and_spread_the_emptiest() {
        let nodes = [
            node("a", 8192, 4000),
            node("b", 8192, 4000),
            node("c", 4096, 3000),
        ];
        let pools = [placed(1, "a", 4096), placed(2, "b", 1024)];
        // Free: a 4096 MiB / 3000m, b 7168 / 3000, c 4096 / 3000 (a and c
        // tie: the lower id).
        let pick = |s| choose(&nodes, &pools, &need(4096), s).map(|n| n.id.as_str());
        assert_eq!(pick(Strategy::BestFit), Some("a"));
        assert_eq!(pick(Strategy::Spread), Some("b"));
        assert_eq!(pick(Strategy::FirstFit), Some("a"));
        // Nothing has 8 GiB free.
        assert_eq!(choose(&nodes, &pools, &need(8192), Strategy::BestFit), None);
    }

    #[test]
    fn down_drained_or_unlabelled_nodes_get_no_new_pool() {
        let mut nodes = vec![
            node("a", 8192, 4000),
            node("b", 8192, 4000),
            node("c", 8192, 4000),
        ];
        nodes[0].ready = false;
        nodes[1].availability = Availability::Drain;
        let pick = |nodes: &[Node], n: &Need| {
            choose(nodes, &[], n, Strategy::BestFit).map(|n| n.id.clone())
        };
        assert_eq!(pick(&nodes, &need(1024)), Some("c".to_string()));
        let mut pinned = need(1024);
        pinned.labels.insert("slotpack.class".into(), "gpu".into());
        assert_eq!(pick(&nodes, &pinned), None);
        nodes[2]
            .labels
            .insert("slotpack.class".into(), "gpu".into());
        assert_eq!(pick(&nodes, &pinned), Some("c".to_string()));
        // CPU counts as well as memory.
        let mut cpu = need(1024);
        cpu.cpu_millis = 5000;
        assert_eq!(pick(&nodes, &cpu), None);
    }

    #[test]
    fn pools_leave_lost_and_down_nodes_and_stay_on_paused_ones() {
        let mut nodes: Vec<Node> = ["a", "b", "c", "d"]
            .iter()
            .map(|id| node(id, 8192, 4000))
            .collect();
        nodes[1].ready = false;
        nodes[2].availability = Availability::Pause;
        nodes[3].availability = Availability::Drain;
        let pools = [
            placed(1, "a", 1024),
            placed(2, "b", 1024),
            placed(3, "c", 1024),
            placed(4, "d", 1024),
            placed(5, "gone", 1024),
        ];
        assert_eq!(
            must_leave(&nodes, &pools),
            [(2, Leave::Lost), (4, Leave::Drained), (5, Leave::Lost)]
        );
        // A paused node takes no new pool, though.
        let free_c = choose(&nodes[2..3], &[], &need(1024), Strategy::BestFit);
        assert_eq!(free_c, None);
    }
}
