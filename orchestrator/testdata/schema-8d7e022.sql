CREATE TABLE IF NOT EXISTS pools (
    number      INTEGER PRIMARY KEY AUTOINCREMENT,
    block       INTEGER NOT NULL UNIQUE CHECK (block >= 0),
    base_port   INTEGER NOT NULL UNIQUE,
    agent_port  INTEGER NOT NULL UNIQUE,
    slots       INTEGER NOT NULL CHECK (slots > 0),
    memory_mb   INTEGER NOT NULL,
    cpu_millis  INTEGER NOT NULL,
    class       TEXT,
    mode        TEXT NOT NULL CHECK (mode IN ('pooled', 'legacy')),
    status      TEXT NOT NULL,
    token       TEXT NOT NULL,
    backend_ref TEXT,
    created_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tenants (
    id          TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    spec        TEXT NOT NULL,
    pool        INTEGER NOT NULL REFERENCES pools(number),
    slot        INTEGER NOT NULL CHECK (slot >= 0),
    port        INTEGER NOT NULL UNIQUE,
    memory_mb   INTEGER NOT NULL,
    cpu_millis  INTEGER NOT NULL,
    desired     TEXT NOT NULL CHECK (desired IN ('running', 'stopped', 'deleting')),
    created_at  TEXT NOT NULL,
    expires_at  INTEGER,
    UNIQUE (pool, slot)
);
CREATE TABLE IF NOT EXISTS tokens (
    hash        TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    kind        TEXT NOT NULL,
    tenant      TEXT,
    pool        TEXT,
    detail      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_tenant ON events (tenant);
CREATE TABLE IF NOT EXISTS migrations (
    tenant      TEXT PRIMARY KEY,
    container   TEXT NOT NULL,
    backup      TEXT NOT NULL,
    spec        TEXT NOT NULL,
    status      TEXT NOT NULL,
    detail      TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
