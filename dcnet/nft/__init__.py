"""The nftables ELB target (``elbctl plan|apply --target nft``): the service model as DNAT
verdict maps in dcnet's own table, with weighted random and Maglev scheduling."""
