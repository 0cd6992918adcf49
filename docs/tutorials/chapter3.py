# %% [markdown]
# # chapter3

# %%
print(1)
