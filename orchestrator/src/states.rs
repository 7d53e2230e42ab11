//! The orchestrator's own states, one list each, parsed once (at the
//! database's edge) and matched as enums everywhere else.

use std::fmt;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

/// Declares an enum stored as one of fixed lower-case words.
macro_rules! word_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored (and shown) word.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }

            /// The value of a stored word.
            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $($word => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
                let s = v.as_str()?;
                $name::parse(s).ok_or_else(|| {
                    FromSqlError::Other(format!("{s:?} is not a {}", stringify!($name)).into())
                })
            }
        }
    };
}

word_enum! {
    /// What the orchestrator wants of a tenant.
    Desired {
        /// Running (created, or started through the API).
        Running = "running",
        /// Stopped through the API; it keeps its slot.
        Stopped = "stopped",
        /// Being deleted: its program is being removed, then its row.
        Deleting = "deleting",
    }
}

word_enum! {
    /// How a pool is used.
    PoolMode {
        /// Shared by tenants (`MAX_BOTS_PER_CONTAINER` slots).
        Pooled = "pooled",
        /// One tenant's own (legacy mode, `POOL_MODE_ENABLED=false`).
        Legacy = "legacy",
    }
}

word_enum! {
    /// Where a pool's start stands, as stored.
    PoolState {
        /// Made, not yet known to run.
        Starting = "starting",
        /// Its agent answered.
        Running = "running",
        /// It could not be started.
        Failed = "failed",
        /// Its removal began (its row goes once the backend removed it; a
        /// tick finishes a removal a crash interrupted).
        Removing = "removing",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_unknown_ones_are_refused() {
        for d in Desired::ALL {
            assert_eq!(Desired::parse(d.as_str()), Some(*d));
        }
        for m in PoolMode::ALL {
            assert_eq!(PoolMode::parse(&m.to_string()), Some(*m));
        }
        for s in PoolState::ALL {
            assert_eq!(PoolState::parse(s.as_str()), Some(*s));
        }
        assert_eq!(Desired::parse("Running"), None);
        let c = rusqlite::Connection::open_in_memory().unwrap();
        let back: Desired = c
            .query_row("SELECT ?1", [Desired::Deleting], |r| r.get(0))
            .unwrap();
        assert_eq!(back, Desired::Deleting);
        assert!(c
            .query_row("SELECT 'paused'", [], |r| r.get::<_, Desired>(0))
            .is_err());
    }
}
