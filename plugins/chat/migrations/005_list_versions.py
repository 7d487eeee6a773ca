"""Add ``chat_list_version``: a number per owner that the database raises in the transaction
of every change that can change what that owner's conversation list shows, so a node may
keep a page it read and answer it again while the number it read with it still holds
(``listing.ListCache``), whichever node or process made the change.

A page (``listing.read_page``) shows the owner's conversations, each one's tags, the message
its ``last_message_id`` names and whether and which files that message carries. Triggers
(AFTER, for every row or statement) raise the number of each owner concerned:

- ``chat_conversation`` INSERT, UPDATE, DELETE: its owner (both, if the owner changes).
  Storing a message always updates its conversation (``last_message_id``, ``message_count``),
  so inserting a message needs no trigger of its own: a message id is new (never reused), so
  no page shows a message before the conversation naming it is updated;
- ``chat_conversation_tag`` INSERT, UPDATE, DELETE: the tag's owner and its conversation's;
- ``chat_message`` UPDATE, DELETE (an edit, a tombstone, a hard delete, e.g. an account's
  messages in others' conversations): the owner of the conversation whose last message it
  is; the others are not on any page;
- ``chat_message_file`` INSERT, UPDATE, DELETE: likewise, through its message.

Cascaded deletes fire them too (on both databases), and more bumps than needed only cost a
page read. A row is never deleted: an owner without one is at 0, and the number only rises,
so a page kept under a number is never answered after a change (no ABA).

On PostgreSQL the triggers are per statement, over transition tables: a send batch updates
all its conversations in one statement, so it raises each owner once; owners are raised in
id order, so two transactions raising the same owners take their row locks in one order.
On SQLite they are per row (SQLite has no statement triggers); its writes run one at a time.
Needs PostgreSQL 11 (``EXECUTE FUNCTION``; transition tables since 10) and SQLite 3.24 (UPSERT).
"""

import peewee as pw
from peewee_migrate import Migrator

TABLE = "chat_list_version"

# SQLite: the owners each row change concerns, as a SELECT of one column ``owner_id``.
_SQLITE_OWNERS = {
    "chat_conversation": {
        "INSERT": "SELECT NEW.owner_id AS owner_id",
        "UPDATE": "SELECT NEW.owner_id AS owner_id UNION SELECT OLD.owner_id",
        "DELETE": "SELECT OLD.owner_id AS owner_id",
    },
    "chat_conversation_tag": {
        "INSERT": "SELECT NEW.owner_id AS owner_id UNION "
                  "SELECT owner_id FROM chat_conversation WHERE id = NEW.conversation_id",
        "UPDATE": "SELECT NEW.owner_id AS owner_id UNION SELECT OLD.owner_id UNION "
                  "SELECT owner_id FROM chat_conversation WHERE id IN (NEW.conversation_id, OLD.conversation_id)",
        "DELETE": "SELECT OLD.owner_id AS owner_id UNION "
                  "SELECT owner_id FROM chat_conversation WHERE id = OLD.conversation_id",
    },
    "chat_message": {
        "UPDATE": "SELECT owner_id FROM chat_conversation WHERE (id = NEW.conversation_id AND last_message_id = NEW.id) "
                  "OR (id = OLD.conversation_id AND last_message_id = OLD.id)",
        "DELETE": "SELECT owner_id FROM chat_conversation WHERE id = OLD.conversation_id AND last_message_id = OLD.id",
    },
    "chat_message_file": {
        "INSERT": "SELECT c.owner_id FROM chat_message m JOIN chat_conversation c ON c.id = m.conversation_id "
                  "AND c.last_message_id = m.id WHERE m.id = NEW.message_id",
        "UPDATE": "SELECT c.owner_id FROM chat_message m JOIN chat_conversation c ON c.id = m.conversation_id "
                  "AND c.last_message_id = m.id WHERE m.id IN (NEW.message_id, OLD.message_id)",
        "DELETE": "SELECT c.owner_id FROM chat_message m JOIN chat_conversation c ON c.id = m.conversation_id "
                  "AND c.last_message_id = m.id WHERE m.id = OLD.message_id",
    },
}

# PostgreSQL: the same over the statement's transition tables (``new_rows``, ``old_rows``).
_POSTGRES_OWNERS = {
    "chat_conversation": {
        "INSERT": "SELECT owner_id FROM new_rows",
        "UPDATE": "SELECT owner_id FROM new_rows UNION SELECT owner_id FROM old_rows",
        "DELETE": "SELECT owner_id FROM old_rows",
    },
    "chat_conversation_tag": {
        "INSERT": "SELECT owner_id FROM new_rows UNION "
                  "SELECT c.owner_id FROM chat_conversation c JOIN new_rows r ON c.id = r.conversation_id",
        "UPDATE": "SELECT owner_id FROM new_rows UNION SELECT owner_id FROM old_rows UNION "
                  "SELECT c.owner_id FROM chat_conversation c JOIN new_rows r ON c.id = r.conversation_id UNION "
                  "SELECT c.owner_id FROM chat_conversation c JOIN old_rows r ON c.id = r.conversation_id",
        "DELETE": "SELECT owner_id FROM old_rows UNION "
                  "SELECT c.owner_id FROM chat_conversation c JOIN old_rows r ON c.id = r.conversation_id",
    },
    "chat_message": {
        "UPDATE": "SELECT c.owner_id FROM chat_conversation c JOIN new_rows r "
                  "ON c.id = r.conversation_id AND c.last_message_id = r.id UNION "
                  "SELECT c.owner_id FROM chat_conversation c JOIN old_rows r "
                  "ON c.id = r.conversation_id AND c.last_message_id = r.id",
        "DELETE": "SELECT c.owner_id FROM chat_conversation c JOIN old_rows r "
                  "ON c.id = r.conversation_id AND c.last_message_id = r.id",
    },
    "chat_message_file": {
        "INSERT": "SELECT c.owner_id FROM new_rows r JOIN chat_message m ON m.id = r.message_id "
                  "JOIN chat_conversation c ON c.id = m.conversation_id AND c.last_message_id = m.id",
        "UPDATE": "SELECT c.owner_id FROM new_rows r JOIN chat_message m ON m.id = r.message_id "
                  "JOIN chat_conversation c ON c.id = m.conversation_id AND c.last_message_id = m.id UNION "
                  "SELECT c.owner_id FROM old_rows r JOIN chat_message m ON m.id = r.message_id "
                  "JOIN chat_conversation c ON c.id = m.conversation_id AND c.last_message_id = m.id",
        "DELETE": "SELECT c.owner_id FROM old_rows r JOIN chat_message m ON m.id = r.message_id "
                  "JOIN chat_conversation c ON c.id = m.conversation_id AND c.last_message_id = m.id",
    },
}

_TRANSITIONS = {"INSERT": "NEW TABLE AS new_rows", "UPDATE": "OLD TABLE AS old_rows NEW TABLE AS new_rows",
                "DELETE": "OLD TABLE AS old_rows"}


def _name(table: str, event: str) -> str:
    return f"{table}_list_version_{event.lower()}"


def _bump(owners: str) -> str:
    # ``WHERE`` after the SELECT: SQLite reads an ``ON`` after a bare FROM as a join's.
    return (f"INSERT INTO {TABLE} (owner_id, version) SELECT DISTINCT owner_id, 1 FROM ({owners}) AS o "
            f"WHERE owner_id IS NOT NULL ORDER BY owner_id "
            f"ON CONFLICT (owner_id) DO UPDATE SET version = {TABLE}.version + 1")


def migrate(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    migrator.sql(f"CREATE TABLE {TABLE} (owner_id VARCHAR(64) PRIMARY KEY, version BIGINT NOT NULL)")
    if isinstance(database, pw.PostgresqlDatabase):
        for table, events in _POSTGRES_OWNERS.items():
            for event, owners in events.items():
                name = _name(table, event)
                migrator.sql(f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $body$ BEGIN "
                             f"{_bump(owners)}; RETURN NULL; END $body$")
                migrator.sql(f"CREATE TRIGGER {name} AFTER {event} ON {table} REFERENCING {_TRANSITIONS[event]} "
                             f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()")
    else:
        for table, events in _SQLITE_OWNERS.items():
            for event, owners in events.items():
                migrator.sql(f"CREATE TRIGGER {_name(table, event)} AFTER {event} ON {table} FOR EACH ROW "
                             f"BEGIN {_bump(owners)}; END")


def rollback(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    postgres = isinstance(database, pw.PostgresqlDatabase)
    for table, events in (_POSTGRES_OWNERS if postgres else _SQLITE_OWNERS).items():
        for event in events:
            migrator.sql(f"DROP TRIGGER {_name(table, event)}" + (f" ON {table}" if postgres else ""))
            if postgres:
                migrator.sql(f"DROP FUNCTION {_name(table, event)}()")
    migrator.sql(f"DROP TABLE {TABLE}")
