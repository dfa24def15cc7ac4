// A worker's record of the owners' epochs (replication/epoch_book.hpp): the newest seen per node,
// and a bound on how many nodes it remembers.
#include "replication/epoch_book.hpp"

#include <catch2/catch.hpp>

#include <string>

using keel::replication::epoch_book;

TEST_CASE("epochs: the newest epoch seen per node is kept, 0 names none, an older one does not lower it", "[actors][epochs]") {
  epoch_book book;
  CHECK(book.highest("o1") == 0);
  CHECK(book.saw("o1", 0) == 0);  // a message without an epoch says nothing
  CHECK(book.size() == 0);
  CHECK(book.saw("o1", 3) == 3);
  CHECK(book.saw("o1", 2) == 3);
  CHECK(2 < book.highest("o1"));         // an answer of epoch 2 is an older owner's
  CHECK_FALSE(3 < book.highest("o1"));   // one of epoch 3 is the current owner's
  CHECK(book.saw("o1", 0) == 3);         // none named: the record stands
  CHECK(book.saw("o2", 1) == 1);  // per node
  CHECK(book.highest("o1") == 3);
}

TEST_CASE("epochs: past its capacity the record forgets the node least recently used, not the oldest", "[actors][epochs]") {
  epoch_book book(3);
  book.saw("a", 1);
  book.saw("b", 1);
  book.saw("c", 1);
  CHECK(book.highest("a") == 1);  // used: kept
  book.saw("d", 1);               // "b" goes
  CHECK(book.size() == 3);
  CHECK(book.highest("b") == 0);
  CHECK(book.highest("a") == 1);
  CHECK(book.highest("c") == 1);
  CHECK(book.highest("d") == 1);
  for (int i = 0; i < 10'000; ++i) book.saw("n" + std::to_string(i), 2);
  CHECK(book.size() == 3);
}
