# -*- coding: utf-8 -*-
# Copyright: volsnap.openstack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one place for what an OpenStack id looks like (every UUID pattern of the collection)."""

from __future__ import annotations

import re
from typing import Optional

# An id as OpenStack APIs give it (Cinder, Glance): a dashed UUID, either case.
UUID = r'[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}'
# An id inside a file or image name Cinder or Glance writes: lowercase, dashes optional, as Cinder's own
# backing-file pattern accepts; never anything that could be a path.
FILE_ID = r'[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}'

_UUID_RE = re.compile(r'^%s\Z' % UUID)
_FILE_ID_RE = re.compile(r'^%s\Z' % FILE_ID)


def is_uuid(value: Optional[str]) -> bool:
    """An API id (dashed UUID, either case)."""
    return bool(_UUID_RE.match(value or ''))


def is_file_id(value: Optional[str]) -> bool:
    """An id that may be part of a share file name (lowercase UUID, dashes optional)."""
    return bool(_FILE_ID_RE.match(value or ''))
