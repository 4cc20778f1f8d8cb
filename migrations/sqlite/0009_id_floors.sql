-- The highest id a table had given when an account deletion removed rows
-- of it. SQLite gives a new row the table's highest id plus one, so an id
-- freed by a deletion (the deleted user's newest posts, say) would be given
-- again, and a client holding it would find someone else's post there; the
-- store gives ids above this floor instead (src/store/sqlite/id_floors.rs).
CREATE TABLE id_floors (
    name    TEXT    PRIMARY KEY,
    last_id INTEGER NOT NULL
) WITHOUT ROWID;
