#include "storage/state_store.h"

#include <fstream>
#include <mutex>
#include <thread>
#include <vector>

#include "storage/state/keys.h"
#include "tests/coordinator/full_disk_env.h"
#include "tests/coordinator/test_util.h"

namespace qf::storage {
namespace {

using ::qf::testing::IsOk;
using ::qf::testing::StatusIs;
using ::qf::testing::TempDir;
using ::testing::AllOf;
using ::testing::HasSubstr;

TEST(StateStoreTest, CommitIsVisibleAndSurvivesReopen) {
  TempDir tmp;
  {
    QF_ASSERT_OK_AND_ASSIGN(auto store, StateStore::Open(tmp.path()));
    StateBatch b;
    b.Put(StateFamily::kJobs, "job-1", "J");
    b.Put(StateFamily::kTasks, TaskKey("job-1", 0), "T0");
    b.Put(StateFamily::kEvents, EventKey("job-1", 1), "E1");
    b.Put(StateFamily::kMeta, std::string(kMetaNextJob), "2");
    QF_ASSERT_OK(store->Commit(std::move(b)));
    QF_ASSERT_OK_AND_ASSIGN(auto v, store->Get(StateFamily::kJobs, "job-1"));
    ASSERT_TRUE(v.has_value());
    EXPECT_EQ(*v, "J");
    // Families are separate key spaces.
    QF_ASSERT_OK_AND_ASSIGN(auto other, store->Get(StateFamily::kTasks, "job-1"));
    EXPECT_FALSE(other.has_value());
  }
  QF_ASSERT_OK_AND_ASSIGN(auto store, StateStore::Open(tmp.path()));
  QF_ASSERT_OK_AND_ASSIGN(auto t, store->Get(StateFamily::kTasks, TaskKey("job-1", 0)));
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(*t, "T0");
  QF_ASSERT_OK_AND_ASSIGN(auto m, store->Get(StateFamily::kMeta, kMetaNextJob));
  EXPECT_EQ(m.value_or(""), "2");

  StateBatch del;
  del.Delete(StateFamily::kJobs, "job-1");
  QF_ASSERT_OK(store->Commit(std::move(del)));
  QF_ASSERT_OK_AND_ASSIGN(auto gone, store->Get(StateFamily::kJobs, "job-1"));
  EXPECT_FALSE(gone.has_value());
}

// A full disk under the store: the write that does not fit fails naming the
// store and the disk's complaint, every later write fails the same way (memory
// and disk no longer agree), and nothing crashes. Reopened with room, every
// earlier commit is there. (On a real full disk, a 1 MiB tmpfs, RocksDB's own
// info logger also aborted the process: storage/state_log.h. Its lines are
// buffered, so this file system's refusals do not reach it in time.)
TEST(StateStoreTest, FullDiskFailsWritesStickilyAndKeepsWhatWasCommitted) {
  TempDir tmp;
  qf::testing::FullDiskEnv disk;
  StateStoreOptions o;
  o.env = disk.env.get();
  int committed = 0;
  absl::Status failed;
  {
    QF_ASSERT_OK_AND_ASSIGN(auto store, StateStore::Open(tmp.path(), o));
    QF_ASSERT_OK(store->health());
    disk.fs->set_budget(64 << 10);
    for (int i = 0; i < 1000 && failed.ok(); ++i) {
      StateBatch b;
      b.Put(StateFamily::kResults, "layer-" + std::to_string(i), std::string(8 << 10, static_cast<char>('a' + i % 26)));
      failed = store->Commit(std::move(b));
      if (failed.ok()) ++committed;
    }
    ASSERT_TRUE(disk.fs->refused());
    EXPECT_THAT(failed, StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr(tmp.path())));
    EXPECT_THAT(failed.message(), HasSubstr("No space left on device"));
    EXPECT_EQ(store->health(), failed);
    disk.fs->unlimited();  // room again, but this store stays failed: only a reopen may go on
    StateBatch again;
    again.Put(StateFamily::kJobs, "job-1", "J");
    EXPECT_EQ(store->Commit(std::move(again)), failed);
  }
  ASSERT_GT(committed, 0);
  QF_ASSERT_OK_AND_ASSIGN(auto store, StateStore::Open(tmp.path(), o));
  QF_EXPECT_OK(store->health());
  for (int i = 0; i < committed; ++i) {
    QF_ASSERT_OK_AND_ASSIGN(auto v, store->Get(StateFamily::kResults, "layer-" + std::to_string(i)));
    ASSERT_TRUE(v.has_value()) << i;
    EXPECT_EQ(v->size(), 8u << 10);
  }
  StateBatch b;
  b.Put(StateFamily::kJobs, "job-1", "J");
  QF_EXPECT_OK(store->Commit(std::move(b)));
}

TEST(StateStoreTest, ScanWalksPrefixInNumericOrder) {
  TempDir tmp;
  QF_ASSERT_OK_AND_ASSIGN(auto store, StateStore::Open(tmp.path()));
  StateBatch b;
  // Inserted out of order, with seq values whose decimal order differs from numeric order.
  for (uint64_t seq : {300u, 2u, 10u, 1u, 256u}) b.Put(StateFamily::kEvents, EventKey("job-7", seq), std::to_string(seq));
  b.Put(StateFamily::kEvents, EventKey("job-70", 5), "other job");
  QF_ASSERT_OK(store->Commit(std::move(b)));

  std::vector<uint64_t> seen;
  QF_ASSERT_OK(store->Scan(StateFamily::kEvents, JobPrefix("job-7"), [&](std::string_view k, std::string_view v) {
    seen.push_back(ReadBigEndianSuffix(k, 8));
    EXPECT_EQ(std::to_string(seen.back()), v);
    return true;
  }));
  EXPECT_EQ(seen, (std::vector<uint64_t>{1, 2, 10, 256, 300}));

  seen.clear();
  QF_ASSERT_OK(store->Scan(
      StateFamily::kEvents, JobPrefix("job-7"),
      [&](std::string_view k, std::string_view) {
        seen.push_back(ReadBigEndianSuffix(k, 8));
        return seen.size() < 2;  // stop early
      },
      EventKey("job-7", 3)));
  EXPECT_EQ(seen, (std::vector<uint64_t>{10, 256}));
}

TEST(StateStoreTest, LargeResultValuesRoundTrip) {
  TempDir tmp;
  std::string big(3 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 2654435761u) >> 13);
  {
    QF_ASSERT_OK_AND_ASSIGN(auto store, StateStore::Open(tmp.path()));
    StateBatch b;
    b.Put(StateFamily::kResults, ResultKey("job-1", 3), big);
    QF_ASSERT_OK(store->Commit(std::move(b)));
  }
  QF_ASSERT_OK_AND_ASSIGN(auto store, StateStore::Open(tmp.path()));
  QF_ASSERT_OK_AND_ASSIGN(auto v, store->Get(StateFamily::kResults, ResultKey("job-1", 3)));
  ASSERT_TRUE(v.has_value());
  EXPECT_TRUE(*v == big);
}

// Batches queued under a caller's lock reach disk in queue order, even when
// many threads wait for durability at once and commits are grouped.
TEST(StateStoreTest, GroupCommitKeepsQueueOrder) {
  TempDir tmp;
  QF_ASSERT_OK_AND_ASSIGN(auto store, StateStore::Open(tmp.path()));
  std::mutex mu;
  uint64_t counter = 0;
  constexpr int kThreads = 8, kPerThread = 150;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        uint64_t ticket;
        {
          std::lock_guard<std::mutex> l(mu);
          ++counter;
          StateBatch b;
          b.Put(StateFamily::kMeta, "last", std::to_string(counter));
          b.Put(StateFamily::kEvents, EventKey("t" + std::to_string(t), i), "x");
          ticket = store->Enqueue(std::move(b));
        }
        ASSERT_THAT(store->WaitDurable(ticket), IsOk());
      }
    });
  }
  for (auto& th : threads) th.join();
  QF_ASSERT_OK_AND_ASSIGN(auto last, store->Get(StateFamily::kMeta, "last"));
  EXPECT_EQ(last.value_or(""), std::to_string(kThreads * kPerThread));
  StateStoreStats stats = store->stats();
  EXPECT_EQ(stats.batches, static_cast<uint64_t>(kThreads * kPerThread));
  EXPECT_LE(stats.groups, stats.batches);
  EXPECT_GE(stats.groups, 1u);
}

TEST(StateStoreTest, OpenRejectsFileAndSecondOpener) {
  TempDir tmp;
  std::string file = tmp.Path("not-a-dir");
  std::ofstream(file) << "x";
  EXPECT_THAT(StateStore::Open(file), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not-a-dir")));

  QF_ASSERT_OK_AND_ASSIGN(auto first, StateStore::Open(tmp.Path("db")));
  EXPECT_THAT(StateStore::Open(tmp.Path("db")),
              StatusIs(absl::StatusCode::kUnavailable, AllOf(HasSubstr(tmp.Path("db")), HasSubstr("another"))));
}

}  // namespace
}  // namespace qf::storage
