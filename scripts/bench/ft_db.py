"""A FreqTrade trade database, looked at and marked from outside the bot.

Used by the data round of scripts/example-freqtrade.sh. It runs wherever
the database is: inside a pool container or a legacy FreqTrade container
(`docker exec -i C /opt/freqtrade/bin/python - ARGS < ft_db.py`), or on the
host for a bind folder (`python3 scripts/bench/ft_db.py ARGS`). Standard
library only.

  check DB            print one JSON line: the DB's tables, its marker
                      rows, inode, size and owner (or {"missing": true})
  mark DB NOTE        add a marker row NOTE (table slotpack_marker, made on
                      first use), then print what `check` prints

Both run as the owner of the database file (setuid when run as root),
so the WAL files SQLite may make (FreqTrade's databases are in WAL mode) are
the bot's and never root's, and the bot can open its database again.
"""

import json
import os
import sqlite3
import sys
import time


def as_owner(path):
    st = os.stat(path)
    if os.geteuid() == 0 and st.st_uid != 0:
        os.setgid(st.st_gid)
        os.setuid(st.st_uid)


def check(path):
    if not os.path.exists(path):
        return {"path": path, "missing": True}
    st = os.stat(path)
    as_owner(path)
    con = sqlite3.connect(path)
    try:
        tables = sorted(r[0] for r in con.execute(
            "select name from sqlite_master where type = 'table'"))
        markers = []
        if "slotpack_marker" in tables:
            markers = [r[0] for r in con.execute(
                "select note from slotpack_marker order by rowid")]
        trades = con.execute("select count(*) from trades").fetchone()[0] \
            if "trades" in tables else None
    finally:
        con.close()
    return {"path": path, "inode": st.st_ino, "size": st.st_size,
            "uid": st.st_uid, "tables": tables, "trades": trades,
            "markers": markers}


def mark(path, note):
    as_owner(path)
    con = sqlite3.connect(path)
    try:
        con.execute("create table if not exists slotpack_marker "
                    "(note text not null, at real not null)")
        con.execute("insert into slotpack_marker values (?, ?)",
                    (note, time.time()))
        con.commit()
    finally:
        con.close()
    return check(path)


def main(argv):
    if len(argv) == 2 and argv[0] == "check":
        out = check(argv[1])
    elif len(argv) == 3 and argv[0] == "mark":
        out = mark(argv[1], argv[2])
    else:
        sys.exit("usage: ft_db.py check DB | mark DB NOTE")
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1:])
