// The state store's RocksDB info log (the LOG file in the --state dir),
// written by us instead of by RocksDB's file logger.
//
// Why: RocksDB's file logger fails an assertion (Debian builds RocksDB with
// assertions on) when it is asked to append after an append failed. On a full
// disk the WAL write fails, RocksDB's error handler logs that failure, and the
// log's own write has just failed too: the coordinator aborted instead of
// returning the write error. This logger appends with stdio and drops the lines
// a full disk refuses; the write error still reaches the caller as a Status.
#ifndef QF_STORAGE_STATE_LOG_H_
#define QF_STORAGE_STATE_LOG_H_

#include <memory>
#include <string>

#include "rocksdb/env.h"

namespace qf::storage {

// Opens (appends to) `dir`/LOG, first moving a LOG above `rotate_bytes` to
// LOG.old. A LOG that cannot be opened gives a logger that drops every line:
// a store without its info log still works.
std::shared_ptr<rocksdb::Logger> OpenStateLog(const std::string& dir, uint64_t rotate_bytes = 16ull << 20);

}  // namespace qf::storage

#endif  // QF_STORAGE_STATE_LOG_H_
