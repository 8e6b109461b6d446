"""The protocols the engines drive and the backends implement, with the values they pass.

The bottom of the engine stack: these modules import no other part of aios_serve, every backend
implements one of them, and the engines (with the factories that pick a backend) sit above."""
