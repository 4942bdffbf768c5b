-- The engine's records, as the sled store keeps them: one value per key, keys in byte order
-- (bytea compares byte by byte, so prefix scans and pages match sled's order exactly).
CREATE TABLE records (
    key   bytea PRIMARY KEY,
    value bytea NOT NULL
);
