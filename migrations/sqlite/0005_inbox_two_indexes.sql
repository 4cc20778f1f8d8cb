-- Two indexes per direct message instead of four: each message was written
-- into inbox_by_recipient, inbox_by_sender and the two covering partial
-- indexes of 0004, four random index pages per send. The covering indexes
-- now hold deleted messages too (their flags are the last column), so they
-- also serve what the two narrow ones did: the cascade of an account
-- deletion, and counting. A page skips the few deleted entries it meets.
DROP INDEX inbox_by_recipient;
DROP INDEX inbox_by_sender;
DROP INDEX inbox_received;
DROP INDEX inbox_sent;
CREATE INDEX inbox_received
    ON inbox_messages(recipient_id, id, sender_id, created_at, message, recipient_deleted);
CREATE INDEX inbox_sent
    ON inbox_messages(sender_id, id, recipient_id, created_at, message, sender_deleted);
