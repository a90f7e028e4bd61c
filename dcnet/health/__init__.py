"""Health checks of real servers run by dcnet itself, for targets without a checker of
their own (the nft target: IPVS has keepalived's checkers, HAProxy its own checks).

``checks`` (pure) says which checks a model asks for and keeps each one's rise/fall
state; ``probe`` runs one TCP or HTTP check; ``state`` is the file the checker writes and
the target reads; ``checker`` runs the rounds and re-applies the target on a change.
"""
