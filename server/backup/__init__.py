"""Backup, restore and backup verification of the records: the SQL database, the file store and the anchors."""
