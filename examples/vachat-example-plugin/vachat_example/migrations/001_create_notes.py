"""Create the example plugin's notes table."""

import peewee as pw


def migrate(migrator, database, fake=False, **kwargs):
    @migrator.create_model
    class Note(pw.Model):
        id = pw.CharField(primary_key=True, max_length=26)
        owner_id = pw.CharField(max_length=64, index=True)
        text = pw.TextField()
        created_at = pw.DateTimeField()

        class Meta:
            table_name = "example_note"


def rollback(migrator, database, fake=False, **kwargs):
    migrator.remove_model("example_note")
