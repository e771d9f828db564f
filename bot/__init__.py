"""The Discord front end of edalle: commands, components and result delivery. No model code here.

`bot.launcher` owns the process (`edalle bot`), `bot.bot` the client, `bot.cogs` the features,
`bot.delivery` the posting of results, `bot.supervisor` the local worker child process.
"""
