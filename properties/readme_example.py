"""The library example shown in README.md (a test checks that the two agree)."""

from crdts import AWORSet

alice, bob = AWORSet(), AWORSet()
bob.join(alice.add("alice", "milk"))          # a mutator returns a small delta to ship
d1 = alice.remove("alice", "milk")           # offline: alice removes milk ...
d2 = bob.add("bob", "milk")                  # ... while bob adds it again
alice.join(d2)                               # exchange deltas, in any order
bob.join(d1)
assert alice == bob and "milk" in alice      # converged; the concurrent add wins
assert alice.digest() == bob.digest()        # equal states, equal canonical bytes
