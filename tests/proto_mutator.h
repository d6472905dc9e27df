// File: tests/proto_mutator.h
//
// Random edits of a protobuf message through reflection, for the
// malformed-input tests of messages that arrive over RPC (a worker's layer
// result, a submitted JobSpec). Byte edits of a serialized message
// (tests/mutator.h) mostly land in bulk payload; these hit the fields.
//
//   std::mt19937 rng(7);
//   proto::JobSpec s = good;
//   qf::testing::MutateMessage(&s, rng);       // one edit
//   qf::testing::MutateMessageUpTo3(&s, rng);  // one to three
#pragma once

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include <cstdint>
#include <iterator>
#include <limits>
#include <random>
#include <string>

namespace qf::testing {

// One random edit of a message tree: a number set to an extreme (negative,
// zero, past int32, NaN, Inf), an enum to a value it may not have, a bool
// flipped, a bytes or string field cut or grown, a repeated entry dropped,
// moved, doubled or changed. Descends into message fields (a random element
// of a repeated one).
inline void MutateMessage(google::protobuf::Message* m, std::mt19937& rng) {
  using google::protobuf::FieldDescriptor;
  const auto pick = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); };
  static constexpr int64_t kInts[] = {-1, 0, 1, 2, 3, 4, 7, 8, 31, 128, 256, 1 << 20, INT32_MAX, INT64_MAX};
  static constexpr double kReals[] = {-1.0, 0.0, 1e-9, 0.5, 1.5, 1e30, std::numeric_limits<double>::quiet_NaN(),
                                      std::numeric_limits<double>::infinity()};
  const auto* d = m->GetDescriptor();
  const auto* r = m->GetReflection();
  const FieldDescriptor* f = d->field(static_cast<int>(pick(d->field_count())));
  const int64_t v = kInts[pick(std::size(kInts))];
  if (f->is_repeated()) {
    const int n = r->FieldSize(*m, f);
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE && n > 0 && pick(4) != 0) {
      return MutateMessage(r->MutableRepeatedMessage(m, f, static_cast<int>(pick(n))), rng);
    }
    switch (pick(3)) {
      case 0: if (n > 0) r->RemoveLast(m, f); return;
      case 1: if (n > 0) r->SwapElements(m, f, static_cast<int>(pick(n)), n - 1); return;
      default: break;
    }
    if (n == 0) return;
    const int at = static_cast<int>(pick(n));
    switch (f->cpp_type()) {
      case FieldDescriptor::CPPTYPE_INT32: r->SetRepeatedInt32(m, f, at, static_cast<int32_t>(v)); return;
      case FieldDescriptor::CPPTYPE_INT64: r->SetRepeatedInt64(m, f, at, v); return;
      case FieldDescriptor::CPPTYPE_DOUBLE: r->SetRepeatedDouble(m, f, at, kReals[pick(std::size(kReals))]); return;
      case FieldDescriptor::CPPTYPE_MESSAGE: r->AddMessage(m, f)->CopyFrom(r->GetRepeatedMessage(*m, f, at)); return;
      default: return;
    }
  }
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32: r->SetInt32(m, f, static_cast<int32_t>(v)); return;
    case FieldDescriptor::CPPTYPE_INT64: r->SetInt64(m, f, v); return;
    case FieldDescriptor::CPPTYPE_UINT32: r->SetUInt32(m, f, static_cast<uint32_t>(v)); return;
    case FieldDescriptor::CPPTYPE_UINT64: r->SetUInt64(m, f, static_cast<uint64_t>(v)); return;
    case FieldDescriptor::CPPTYPE_DOUBLE: r->SetDouble(m, f, kReals[pick(std::size(kReals))]); return;
    case FieldDescriptor::CPPTYPE_FLOAT: r->SetFloat(m, f, static_cast<float>(kReals[pick(std::size(kReals))])); return;
    case FieldDescriptor::CPPTYPE_ENUM: r->SetEnumValue(m, f, static_cast<int>(v % 9)); return;
    case FieldDescriptor::CPPTYPE_BOOL: r->SetBool(m, f, !r->GetBool(*m, f)); return;
    case FieldDescriptor::CPPTYPE_MESSAGE: return MutateMessage(r->MutableMessage(m, f), rng);
    case FieldDescriptor::CPPTYPE_STRING: {
      std::string s = r->GetString(*m, f);
      if (pick(2) == 0 && !s.empty()) s.resize(pick(s.size()));
      else s += f->type() == FieldDescriptor::TYPE_BYTES ? std::string(1 + pick(9), '\x7f') : "x";
      r->SetString(m, f, s);
      return;
    }
    default: return;
  }
}

// One to three edits (the count drawn first), as tests/mutator.h's Mutator
// makes of a text.
inline void MutateMessageUpTo3(google::protobuf::Message* m, std::mt19937& rng) {
  for (int e = 0, edits = 1 + static_cast<int>(rng() % 3); e < edits; ++e) MutateMessage(m, rng);
}

}  // namespace qf::testing
