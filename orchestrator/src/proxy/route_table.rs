//! Proxy routes, derived from the database: tenant id → owner, port, and
//! the uid of the slot user that must be the one listening on that port.

use std::collections::HashMap;

/// Where one tenant is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Owner (who may use the route).
    pub owner: String,
    /// Address its port is reached on (127.0.0.1 but on a cluster, where
    /// it is the pool's node).
    pub ip: std::net::IpAddr,
    /// Port.
    pub port: u16,
    /// Uid of the tenant's slot user.
    pub uid: u32,
}

/// Every route, by tenant id and by port, each with a generation: a new
/// one at every insert (a move) and [`RouteTable::bump`] (a stop), so that a
/// proxy stream opened under one generation knows when it no longer holds.
#[derive(Debug, Default)]
pub struct RouteTable {
    by_id: HashMap<String, Route>,
    uid_by_port: HashMap<u16, u32>,
    generation: HashMap<String, u64>,
    last_generation: u64,
}

impl RouteTable {
    /// Add or replace the route of `id` (a new generation).
    pub fn insert(&mut self, id: String, route: Route) {
        self.uid_by_port.insert(route.port, route.uid);
        self.last_generation += 1;
        self.generation.insert(id.clone(), self.last_generation);
        if let Some(old) = self.by_id.insert(id, route) {
            if !self.by_id.values().any(|r| r.port == old.port) {
                self.uid_by_port.remove(&old.port);
            }
        }
    }

    /// Drop the route of `id`.
    pub fn remove(&mut self, id: &str) {
        self.generation.remove(id);
        if let Some(old) = self.by_id.remove(id) {
            self.uid_by_port.remove(&old.port);
        }
    }

    /// Give the route of `id` a new generation (its tenant stopped).
    pub fn bump(&mut self, id: &str) {
        if let Some(g) = self.generation.get_mut(id) {
            self.last_generation += 1;
            *g = self.last_generation;
        }
    }

    /// The route of `id` and its generation.
    pub fn get_with_generation(&self, id: &str) -> Option<(&Route, u64)> {
        Some((self.by_id.get(id)?, *self.generation.get(id)?))
    }

    /// The route of `id`.
    pub fn get(&self, id: &str) -> Option<&Route> {
        self.by_id.get(id)
    }

    /// The uid that must listen on `port`, if a tenant is routed there.
    pub fn uid_of_port(&self, port: u16) -> Option<u32> {
        self.uid_by_port.get(&port).copied()
    }
}

impl FromIterator<(String, Route)> for RouteTable {
    fn from_iter<I: IntoIterator<Item = (String, Route)>>(it: I) -> Self {
        let mut r = RouteTable::default();
        for (id, route) in it {
            r.insert(id, route);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(port: u16, uid: u32) -> Route {
        Route {
            owner: "o".into(),
            ip: std::net::Ipv4Addr::LOCALHOST.into(),
            port,
            uid,
        }
    }

    #[test]
    fn ports_follow_their_tenants() {
        let mut r: RouteTable = [("a".to_string(), route(9000, 1))].into_iter().collect();
        assert_eq!(r.uid_of_port(9000), Some(1));
        // A move to another port.
        r.insert("a".into(), route(9005, 7));
        assert_eq!((r.uid_of_port(9000), r.uid_of_port(9005)), (None, Some(7)));
        let (_, g1) = r.get_with_generation("a").unwrap();
        r.bump("a");
        let (_, g2) = r.get_with_generation("a").unwrap();
        assert_ne!(g1, g2, "a stop is a new generation");
        r.remove("a");
        assert!(r.get_with_generation("a").is_none());
        assert_eq!(r.uid_of_port(9005), None);
        assert!(r.get("a").is_none());
    }
}
