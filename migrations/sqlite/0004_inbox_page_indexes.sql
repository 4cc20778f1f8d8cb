-- A user's inbox page (GET /api/inbox) straight from two indexes: the
-- messages they received and the ones they sent, each without the ones they
-- deleted, with every column the page shows. Through inbox_by_recipient and
-- inbox_by_sender every message was a seek to its own table page, made
-- only to check the deleted flag. Those two stay: deleting an account
-- cascades through them.
CREATE INDEX inbox_received
    ON inbox_messages(recipient_id, id, sender_id, created_at, message, recipient_deleted)
    WHERE recipient_deleted = 0;
CREATE INDEX inbox_sent
    ON inbox_messages(sender_id, id, recipient_id, created_at, message, sender_deleted)
    WHERE sender_deleted = 0;
