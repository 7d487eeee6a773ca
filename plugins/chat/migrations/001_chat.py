"""Create the chat plugin's tables and its full-text index (plugins.chat.models, plugins.chat.search).

A snapshot of the models as they were when this was written (later model changes need their
own migration). The classes are named ``Chat…`` because Peewee names indexes after the class
(``chatmessage_conversation_id_id``): index names share one namespace per database. Portable column types; the full-text index is the one dialect-specific part:

- SQLite: an FTS5 table ``chat_message_fts`` (unicode61, remove_diacritics 2) holding each
  live message's normalised words, with the message, conversation and owner ids as indexed
  columns so entries are found through the index when a message or conversation goes;
- PostgreSQL: ``chat_message_search`` (message id, owner id, a ``tsvector``) with a GIN index,
  its rows going with their message (ON DELETE CASCADE).
"""

import datetime

import peewee as pw
from peewee_migrate import Migrator


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


class _Json(pw.TextField):
    """vachat's JSONField storage: JSON as text."""


def migrate(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    @migrator.create_model
    class ChatConversation(pw.Model):
        id = pw.CharField(primary_key=True, max_length=26)
        owner_id = pw.CharField(max_length=64)
        title = pw.CharField(max_length=200)
        description = pw.TextField(default="")
        is_public = pw.BooleanField(default=False)
        is_archived = pw.BooleanField(default=False)
        metadata = _Json(default="{}")
        current_message_id = pw.CharField(max_length=26, null=True)
        last_message_id = pw.CharField(max_length=26, null=True)
        message_count = pw.IntegerField(default=0)
        created_at = pw.DateTimeField(default=_now)
        updated_at = pw.DateTimeField(default=_now)

        class Meta:
            table_name = "chat_conversation"
            indexes = (
                (("owner_id", "is_archived", "updated_at", "id"), False),
                (("owner_id", "is_archived", "created_at", "id"), False),
                (("owner_id", "is_archived", "title", "id"), False),
            )

    @migrator.create_model
    class ChatConversationTag(pw.Model):
        id = pw.CharField(primary_key=True, max_length=26)
        conversation = pw.ForeignKeyField(ChatConversation, on_delete="CASCADE", index=False)
        owner_id = pw.CharField(max_length=64)
        tag = pw.CharField(max_length=50)

        class Meta:
            table_name = "chat_conversation_tag"
            indexes = ((("conversation", "tag"), True), (("owner_id", "tag", "conversation"), False))

    @migrator.create_model
    class ChatMessage(pw.Model):
        id = pw.CharField(primary_key=True, max_length=26)
        conversation = pw.ForeignKeyField(ChatConversation, on_delete="CASCADE", index=False)
        user_id = pw.CharField(max_length=64, null=True)
        role = pw.CharField(max_length=16, default="user")
        type = pw.CharField(max_length=16, default="text")
        content = pw.TextField(default="")
        parent_id = pw.CharField(max_length=26, null=True)
        metadata = _Json(default="{}")
        client_message_id = pw.CharField(max_length=100, null=True)
        is_edited = pw.BooleanField(default=False)
        edited_at = pw.DateTimeField(null=True)
        deleted_at = pw.DateTimeField(null=True)
        created_at = pw.DateTimeField(default=_now)
        updated_at = pw.DateTimeField(default=_now)

        class Meta:
            table_name = "chat_message"
            indexes = (
                (("conversation", "id"), False),
                (("conversation", "updated_at"), False),
                (("conversation", "client_message_id"), True),
                (("user_id",), False),
            )

    @migrator.create_model
    class ChatMessageFile(pw.Model):
        id = pw.CharField(primary_key=True, max_length=26)
        message = pw.ForeignKeyField(ChatMessage, on_delete="CASCADE", index=False)
        file_id = pw.CharField(max_length=64)
        position = pw.SmallIntegerField(default=0)

        class Meta:
            table_name = "chat_message_file"
            indexes = ((("message", "file_id"), True), (("file_id",), False))

    if isinstance(database, pw.PostgresqlDatabase):
        migrator.sql(
            "CREATE TABLE chat_message_search ("
            " message_id VARCHAR(26) PRIMARY KEY REFERENCES chat_message (id) ON DELETE CASCADE,"
            " owner_id VARCHAR(64) NOT NULL,"
            " document TSVECTOR NOT NULL)")
        migrator.sql("CREATE INDEX chat_message_search_document ON chat_message_search USING GIN (document)")
        migrator.sql("CREATE INDEX chat_message_search_owner ON chat_message_search (owner_id)")
    else:
        migrator.sql(
            "CREATE VIRTUAL TABLE chat_message_fts USING fts5("
            "body, message_id, conversation_id, owner_id, tokenize = 'unicode61 remove_diacritics 2')")


def rollback(migrator: Migrator, database: pw.Database, *, fake: bool = False) -> None:
    if isinstance(database, pw.PostgresqlDatabase):
        migrator.sql("DROP TABLE IF EXISTS chat_message_search")
    else:
        migrator.sql("DROP TABLE IF EXISTS chat_message_fts")
    for table in ("chat_message_file", "chat_message", "chat_conversation_tag", "chat_conversation"):
        migrator.remove_model(table)
